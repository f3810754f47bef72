"""The one product module that imports TRL: every TRL name the project uses is taken from here.

Why: TRL moves what we build on. AsyncGRPO lives in `trl.experimental` in 1.16 and leaves it in 1.18 (the trainer
imported from `trl`, the vLLM client renamed, the worker and weight-transfer injection reworked; design §4). With every
import routed through this table, a TRL upgrade is this one file, and `tests/trainer/test_trl_api.py` fails first
where a name moved or a private helper changed the signature we call it with. That test also fails naming the file
when any other product module, `gpu/` or `bench/` script imports `trl` itself.

It sits in the bottom layer (intercept_common) so the worker, the trainer and the scripts can all use it.

Names resolve lazily (PEP 562 `__getattr__`): importing this module imports nothing of TRL, and a name pulls in only
its own TRL module when first used, so importing the gate or the worker never loads TRL's async GRPO package (peft,
trackio, torch custom ops: ~1 s on a CPU box). Nothing is cached here: `from intercept_common.trl_api import packing` returns TRL's
live module, so the attributes `trainer.cpu_compat` patches on it (and tests monkeypatch) are the ones TRL reads.

PUBLIC: TRL's documented API. PRIVATE: what TRL may move or change in any release without notice — everything under
`trl.experimental`, module-level helpers it does not export, `trl.trainer.utils`, and the modules whose private
attributes (`packing._flash_attn`, `async_grpo_trainer.get_peak_flops_per_device`) `trainer.cpu_compat` patches.
The test pins the signature or attributes the project relies on for each PRIVATE name.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# name -> (TRL module, attribute in it; None: the module itself)
PUBLIC: dict[str, tuple[str, str | None]] = {
    "TrlParser": ("trl", "TrlParser"),
    # design §3: the training chat template, the prefix-preservation check, and tool-call parsing
    "get_training_chat_template": ("trl.chat_template_utils", "get_training_chat_template"),
    "is_chat_template_prefix_preserving": ("trl.chat_template_utils", "is_chat_template_prefix_preserving"),
    "add_response_schema": ("trl.chat_template_utils", "add_response_schema"),
    "parse_response": ("trl.chat_template_utils", "parse_response"),
}

PRIVATE: dict[str, tuple[str, str | None]] = {
    "AsyncGRPOTrainer": ("trl.experimental.async_grpo", "AsyncGRPOTrainer"),
    "AsyncGRPOConfig": ("trl.experimental.async_grpo", "AsyncGRPOConfig"),
    # what the worker builds and queues; the trainer's own rollout worker defines it
    "RolloutSample": ("trl.experimental.async_grpo.async_rollout_worker", "RolloutSample"),
    # module-level helpers of the trainer, not exported by TRL
    "log_rollout_traces": ("trl.experimental.async_grpo.async_grpo_trainer", "log_rollout_traces"),
    "round_lora_rank": ("trl.experimental.async_grpo.async_grpo_trainer", "round_lora_rank"),
    # modules whose globals trainer.cpu_compat patches (and the gpu benches use: TreeRow, TREE_ATTENTION)
    "packing": ("trl.experimental.async_grpo.packing", None),
    "async_grpo_trainer": ("trl.experimental.async_grpo.async_grpo_trainer", None),
    # the jinja TRL recognises as Qwen3's (and swaps for its prefix-preserving training variant); not in its docs
    "qwen3_chat_template": ("trl.chat_template_utils", "qwen3_chat_template"),
    # the gpu benches measure the trainer's own LM head and MFU arithmetic
    "add_fused_lm_head": ("trl.trainer.utils", "add_fused_lm_head"),
    "compute_flops_per_token": ("trl.trainer.utils", "compute_flops_per_token"),
    "compute_mfu": ("trl.trainer.utils", "compute_mfu"),
    "get_peak_flops": ("trl.trainer.utils", "get_peak_flops"),
}

NAMES: dict[str, tuple[str, str | None]] = {**PUBLIC, **PRIVATE}
__all__ = sorted(NAMES)

# TRL warns once on importing anything under `trl.experimental`; we use it knowingly.
_SILENCE_EXPERIMENTAL = "TRL_EXPERIMENTAL_SILENCE"


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = NAMES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    if module_name.startswith("trl.experimental"):
        os.environ.setdefault(_SILENCE_EXPERIMENTAL, "1")
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)


def __dir__() -> list[str]:
    return sorted({*globals(), *NAMES})
