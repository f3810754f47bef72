"""Arguments of `intercept-rl train`: our own dataclass next to TRL's `AsyncGRPOConfig`, parsed the TRL way.

`TrlParser` reads both dataclasses from flags (`--learning-rate` or `--learning_rate`) and from `--config file.yaml`
(a mapping of the same names; CLI flags win). A `--preset` only changes defaults, so every preset value can still be
overridden by the config file or a flag: precedence is flag > config file > preset > built-in default.

Options that TRL already defines (learning rate, clip epsilons, temperature, `max_completion_length`,
`max_staleness`, `weight_sync_steps`, `token_budget`, `num_generations`, `dtype`, `bf16`, `gradient_checkpointing`,
`output_dir`, `save_steps`, `resume_from_checkpoint`, `report_to`, `project`, `trackio_space_id`, `seed`, `max_steps`,
...) keep TRL's names; this module only adds what is ours: the engine, tasks, agent, sandbox and LoRA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml

# Each preset is a mapping of defaults over both dataclasses. Keep them small: a preset is a starting point.
PRESETS: dict[str, dict[str, Any]] = {
    # Fits a 2-core laptop: the embedded tiny model served by the local engine, embedded tasks in bubblewrap sandboxes,
    # a real agent. The tiny model cannot solve the tasks; this proves the machinery end to end.
    "cpu-demo": {
        "model_name_or_path": "embedded",
        "tasks": "embedded",
        "agent": "mini-swe-agent",
        "sandbox": "local",
        "max_model_len": 4096,
        # 0 = TRL's fixed-count batcher: one micro-batch of `per_device_train_batch_size` samples per step. A token
        # budget would instead wait until a row is full, and the tree packing shares the agent's long system prompt
        # across a group, so on a slow CPU a step would wait for dozens of rollouts.
        "token_budget": 0,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "num_generations": 2,
        "max_inflight": 2,
        "max_turns": 3,
        "max_tokens_per_turn": 96,
        "agent_wall_time_s": 120.0,
        "drop_zero_variance_groups": False,
        "episode_timeout_s": 300.0,
        "max_completion_length": 512,
        "max_steps": 8,
        "learning_rate": 1e-4,
        "temperature": 1.0,
        "max_staleness": 2,
        "weight_sync_steps": 1,
        "dtype": "float32",
        "bf16": False,
        "output_dir": "runs/cpu-demo",
        "save_steps": 4,
        "logging_steps": 1,
        "report_to": ["trackio"],
        "project": "intercept-rl-cpu-demo",
        "heartbeat_stale_after_s": 900.0,
    },
}


@dataclass
class SweTrainArguments:
    """What `intercept-rl train` adds to TRL's `AsyncGRPOConfig`: model, engine, tasks, agent, sandbox, LoRA."""

    preset: str | None = field(
        default=None,
        metadata={"help": f"Start from a named set of defaults ({', '.join(PRESETS)}); flags and --config win."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Model to train: a local directory or a Hub id; 'embedded' = the tiny random Qwen3 (CPU)."},
    )
    vllm_url: str | None = field(
        default=None,
        metadata={
            "help": "Base URL of a running vLLM server (see `vllm_serve_command`); weights sync over NCCL. Unset: "
            "start the local engine on this machine (stopped when training ends) and sync weights over HTTP."
        },
    )
    served_model_name: str = field(
        default="policy", metadata={"help": "Model name the engine serves and the agents are told to use."}
    )
    max_model_len: int = field(
        default=4096, metadata={"help": "Context length of the local engine (prompt + completion)."}
    )
    engine_startup_timeout_s: float = field(
        default=300.0, metadata={"help": "How long to wait for the local engine to become healthy."}
    )
    tasks: str = field(
        default="embedded",
        metadata={"help": "Task source: 'embedded', a local JSON/JSONL/parquet file, or a Hub dataset name."},
    )
    task_split: str = field(default="train", metadata={"help": "Dataset split of the tasks."})
    max_tasks: int | None = field(default=None, metadata={"help": "Use at most this many tasks."})
    agent: str = field(
        default="mini-swe-agent",
        metadata={"help": "Agent CLI run in each sandbox: 'mini-swe-agent', 'pi', 'cmd:<shell command>', 'oracle'."},
    )
    sandbox: str = field(
        default="local", metadata={"help": "Sandbox backend: 'local' (bubblewrap) or 'docker'."}
    )
    max_inflight: int = field(
        default=4, metadata={"help": "Rollouts (agent + sandbox) running at once."}
    )
    max_turns: int = field(default=30, metadata={"help": "Agent calls per rollout before its budget ends it."})
    max_tokens_per_turn: int = field(
        default=1024, metadata={"help": "Cap on tokens sampled per agent call (the agent may ask for fewer)."}
    )
    agent_wall_time_s: float = field(
        default=900.0,
        metadata={"help": "Agent wall-time budget per rollout; past it the agent is killed and its work graded."},
    )
    budget_grace_s: float = field(
        default=30.0,
        metadata={"help": "Seconds the agent may still act on the reply that spent its token budget "
                  "(max_completion_length): run its last command, write its answer. A further call ends it."},
    )
    episode_timeout_s: float = field(
        default=1800.0, metadata={"help": "Hard wall-time cap on one rollout (agent + grading); past it: unscorable."}
    )
    reward_mode: str = field(
        default="binary",
        metadata={"help": "'binary': 1 only if every FAIL_TO_PASS and PASS_TO_PASS test passes; 'fraction': the "
                  "passing share."},
    )
    drop_zero_variance_groups: bool = field(
        default=True,
        metadata={"help": "Drop groups whose rewards are all equal (no learning signal). The CPU demo keeps them so "
                  "a model that never solves a task still exercises every step of the loop."},
    )
    chat_template: str | None = field(
        default=None,
        metadata={"help": "Prefix-preserving training chat template (path or jinja text); default: TRL's for the "
                  "model."},
    )
    use_peft: bool = field(
        default=False, metadata={"help": "Train a LoRA adapter (peft) instead of a full fine-tune."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scaling = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout (0 keeps the PPO ratio exact)."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Modules LoRA adapts (never lm_head); default: all attention and MLP projections."},
    )
    tree_attention: str = field(
        default="auto",
        metadata={
            "help": "Tree-packed attention: 'auto' (Hub FA3 kernel when it loads, else the torch SDPA fallback), "
            "'torch' (always the fallback), 'kernel' (never patch)."
        },
    )
    trackio_dir: str | None = field(
        default=None,
        metadata={"help": "Local Trackio directory (SQLite per project); default: <output_dir>/trackio."},
    )

    def __post_init__(self) -> None:
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")
        if self.tree_attention not in ("auto", "torch", "kernel"):
            raise ValueError(f"tree_attention must be auto, torch or kernel, got {self.tree_attention!r}")
        if self.max_inflight < 1 or self.max_turns < 1 or self.max_tokens_per_turn < 1:
            raise ValueError("max_inflight, max_turns and max_tokens_per_turn must be >= 1")
        if self.reward_mode not in ("binary", "fraction"):
            raise ValueError(f"reward_mode must be binary or fraction, got {self.reward_mode!r}")
        if self.lora_r < 1:
            raise ValueError("lora_r must be >= 1")


DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Our defaults for TRL's own fields, under every preset: local Trackio logging, and a project name of ours.
BASE_DEFAULTS: dict[str, Any] = {"report_to": ["trackio"], "project": "intercept-rl", "logging_steps": 1}


def make_parser():
    """The `TrlParser` over (SweTrainArguments, AsyncGRPOConfig); imported lazily because TRL is heavy."""
    import torch
    from trl import TrlParser
    from trl.experimental.async_grpo import AsyncGRPOConfig

    parser = TrlParser((SweTrainArguments, AsyncGRPOConfig), prog="intercept-rl train")
    # TRL defaults to bf16 autocast, which transformers refuses without a GPU; keep it only where it can run.
    parser.set_defaults(**BASE_DEFAULTS, bf16=torch.cuda.is_available())
    return parser


def _preset_name(argv: list[str]) -> str | None:
    """The preset named on the command line, else in the `--config` file (both spellings of the flag)."""
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1]
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        with open(argv[argv.index("--config") + 1]) as handle:
            config = yaml.safe_load(handle)
        if isinstance(config, dict) and config.get("preset"):
            return str(config["preset"])
    return None


def parse_train_args(argv: list[str] | None = None):
    """Parse flags / `--config` (over a `--preset`) into `(SweTrainArguments, AsyncGRPOConfig)` and validate them."""
    parser = make_parser()
    argv = list(argv or [])
    preset = _preset_name(argv)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        parser.set_defaults(**PRESETS[preset])
    script_args, training_args = parser.parse_args_and_config(argv)
    validate(script_args, training_args)
    return script_args, training_args


def validate(script_args: SweTrainArguments, training_args) -> None:
    """Cross-field checks with messages that say which flag to change."""
    if not script_args.model_name_or_path:
        raise ValueError("--model-name-or-path is required (or use --preset cpu-demo)")
    if script_args.vllm_url is None and training_args.token_budget is None:
        # Without vLLM, TRL would otherwise block on a vLLM /health that never answers (DESIGN §4).
        training_args.token_budget = script_args.max_model_len
    if training_args.trackio_space_id and training_args.hub_private_repo is None:
        training_args.hub_private_repo = True  # a dashboard Space is private unless the user says otherwise
    if training_args.max_steps is None or training_args.max_steps <= 0:
        raise ValueError("--max-steps must be > 0: rollouts are a live stream, there are no epochs")
    if script_args.use_peft and script_args.lora_target_modules:
        if any("lm_head" in m or "embed_tokens" in m for m in script_args.lora_target_modules):
            raise ValueError("--lora-target-modules must not include lm_head / embed_tokens (TRL refuses LoRA there)")


def peft_config_from(script_args: SweTrainArguments):
    """The peft `LoraConfig` for `--use-peft`, else None (full fine-tune)."""
    if not script_args.use_peft:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=script_args.lora_r,
        lora_alpha=script_args.lora_alpha,
        lora_dropout=script_args.lora_dropout,
        target_modules=script_args.lora_target_modules or DEFAULT_LORA_TARGETS,
        bias="none",
        task_type="CAUSAL_LM",
    )


def early_trackio_dir(argv: list[str]) -> str:
    """`trackio_dir_for` computed from the raw argv, before TRL (which imports trackio) is imported.

    Trackio reads `TRACKIO_DIR` once, at import, and importing `AsyncGRPOConfig` imports trackio; so the directory
    must be known before parsing. Same precedence as the parser: flag > `--config` file > preset > default.
    """
    import argparse

    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--output_dir", "--output-dir", default=None)
    early.add_argument("--trackio_dir", "--trackio-dir", default=None)
    early.add_argument("--config", default=None)
    known, _ = early.parse_known_args(argv)
    file_values: dict[str, Any] = {}
    if known.config:
        with open(known.config) as handle:
            loaded = yaml.safe_load(handle)
        file_values = loaded if isinstance(loaded, dict) else {}
    preset = PRESETS.get(_preset_name(argv) or "", {})

    def pick(key: str, flag_value):
        return flag_value if flag_value is not None else file_values.get(key, preset.get(key))

    trackio_dir = pick("trackio_dir", known.trackio_dir)
    output_dir = pick("output_dir", known.output_dir) or "trainer_output"
    return os.path.abspath(trackio_dir or os.path.join(output_dir, "trackio"))


def trackio_dir_for(script_args: SweTrainArguments, training_args) -> str:
    """Where local Trackio writes `<project>.db`: `--trackio-dir`, else `<output_dir>/trackio`."""
    return os.path.abspath(script_args.trackio_dir or os.path.join(training_args.output_dir, "trackio"))
