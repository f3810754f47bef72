"""What `intercept-rl space deploy` takes: its options as config dataclasses, read like every other command's
(flags in either spelling, or `--config FILE.yaml`, flat or under a `space:` section; intercept_common.config_tree),
and checked in one place before anything is planned or called."""

from __future__ import annotations

from dataclasses import dataclass, field

from intercept_common.errors import UserError
from intercept_common.served_model import DEFAULT_SERVED_MODEL_NAME

DEFAULT_HARDWARE = "l40sx4"  # 4 x 48 GB: vLLM on GPU 0, the FSDP2 trainer on GPUs 1-3 (see space_app/README.md)
DEFAULT_MODEL = "Qwen/Qwen3-1.7B"
# The Space's own cap on vLLM's context, where every other command defaults to the model's max positions
# (intercept_common.context_length): vLLM refuses to start when one full-length sequence's KV cache does not fit the
# GPU memory left after the weights, and a Space gives vLLM one GPU whatever `--model` is. E.g. an 8B model with 131072
# positions (Llama 3.1) needs 16 GB of bf16 weights plus 131072 x 128 KB = 16 GB of KV cache: no 24 GB card starts it.
# 32768 fits there and still holds multi-turn agent episodes.
SPACE_MAX_MODEL_LEN = 32768


class PlanError(RuntimeError, UserError):
    """The plan cannot be made or run (missing token, bad option)."""


@dataclass
class DeployOptions:
    """What `intercept-rl space deploy` was asked for; `deploy.build_plan()` turns them into a `Plan`."""

    _config_section = "space"

    space_id: str = field(metadata={"help": "The Space to create or update, OWNER/NAME."})
    hardware: str = field(
        default=DEFAULT_HARDWARE,
        metadata={"help": f"Space hardware (a huggingface_hub.SpaceHardware value); default {DEFAULT_HARDWARE}. vLLM "
                  "takes GPU 0 and the trainer the others, so training needs at least 2 GPUs."})
    public: bool = field(
        default=False,
        metadata={"help": "A public Space (status page and gate URL reachable by anyone; rollout keys still "
                  "required). Private by default."})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": f"Model to train (Hub id); default {DEFAULT_MODEL}."})
    served_model_name: str = field(default=DEFAULT_SERVED_MODEL_NAME,
                                   metadata={"help": "The name vLLM serves the model under."})
    max_model_len: int = field(
        default=SPACE_MAX_MODEL_LEN,
        metadata={"help": f"vLLM context length; default {SPACE_MAX_MODEL_LEN}, a Space-only cap (other commands "
                  "default to the model's max positions): vLLM refuses to start when one full-length sequence's KV "
                  "cache does not fit the GPU."})
    dtype: str = field(default="bfloat16", metadata={"help": "vLLM and trainer dtype (they must match)."})
    train_args: str = field(
        default="",
        metadata={"help": "Extra flags for the trainer, one string, e.g. '--tasks SWE-Gym/SWE-Gym --max-steps 200' "
                  "(see `intercept-rl train --help`)."})
    trackio_project: str | None = field(default=None, metadata={"help": "Trackio project; default the Space's name."})
    trackio_space_id: str | None = field(
        default=None, metadata={"help": "Trackio dashboard Space, OWNER/NAME (private unless the trainer is told "
                                "otherwise)."})
    pause_when_done: bool = field(
        default=True, metadata={"help": "Pause the Space when training ends (`--no-pause-when-done` keeps it up, "
                                "and billing)."})
    allow_unsandboxed: bool = field(
        default=False,
        metadata={"help": "DANGEROUS: if bubblewrap cannot start inside the Space, run model-written code without a "
                  "sandbox instead of refusing to start."})
    commit_message: str = field(default="Deploy intercept-rl training Space",
                                metadata={"help": "The message of the upload's commit to the Space repository."})

    def __post_init__(self) -> None:
        validate(self)

    @property
    def private(self) -> bool:
        return not self.public


@dataclass
class DeployRun:
    """How this invocation runs the plan (not part of what is deployed)."""

    _config_section = "run"

    dry_run: bool = field(default=False, metadata={"help": "Print the plan (secrets by name only) and call nothing."})
    follow: bool = field(
        default=False, metadata={"help": "Follow the build and the run; pause the Space when training ends or fails."})


def validate(options: DeployOptions) -> None:
    """A one-line `PlanError` for an option no Space can take, before any plan is made."""
    from huggingface_hub import SpaceHardware

    owner, _, name = options.space_id.partition("/")
    if not owner or not name or "/" in name:
        raise PlanError(f"--space-id must be OWNER/NAME, got {options.space_id!r}")
    known = [hw.value for hw in SpaceHardware]
    if options.hardware not in known:
        raise PlanError(f"--hardware {options.hardware!r} is not a Space hardware; known: {', '.join(known)}")
    if options.max_model_len < 1:
        raise PlanError("--max-model-len must be >= 1")
