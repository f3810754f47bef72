"""The trainer's choice-valued options, as string enums: one list of values, shared by the parser (HfArgumentParser
turns an Enum field into `choices`), the config's validation and the code that acts on the value.

Kept free of heavy imports: `trainer.config` types its fields with these, and parsing must not pay for torch.
"""

from __future__ import annotations

import enum

from intercept_common.errors import ConfigError


class VllmWeightSync(enum.StrEnum):
    """`--vllm-weight-sync`: how weights reach a vLLM server (the table in `trainer.vllm_weight_sync`)."""

    NCCL = "nccl"
    IPC = "ipc"
    DISK = "disk"
    LORA = "lora"


class TreeAttention(enum.StrEnum):
    """`--tree-attention`: which kernel runs tree-packed attention (`trainer.cpu_compat.apply_cpu_compat`)."""

    AUTO = "auto"  # the Hub FA3 kernel when it loads, else the torch SDPA fallback
    TORCH = "torch"  # always the fallback
    KERNEL = "kernel"  # never patch: a missing kernel fails at the first forward, as in stock TRL


class OffPolicyCorrection(enum.StrEnum):
    """`--off-policy-correction`: how the loss corrects for stale samples (the formulas in `trainer.off_policy`)."""

    NONE = "none"
    TIS = "tis"
    MIS_TOKEN = "mis-token"
    MIS_SEQ = "mis-seq"
    DECOUPLED = "decoupled"


def parse_choice(enum_type: type[enum.StrEnum], value: object, option: str) -> enum.StrEnum:
    """`value` as a member of `enum_type`, or a one-line `ConfigError` naming `option` and the allowed values."""
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum_type)
        raise ConfigError(f"{option} must be one of {allowed}; got {value!r}") from None
