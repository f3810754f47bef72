"""Arguments of `intercept-rl train`: ours, composed from the rollout side's configs, next to TRL's `AsyncGRPOConfig`.

The command parses, with one `TrlParser`, `SweTrainArguments` (model, engine, tasks, LoRA: what only training has),
the rollout side's own configs (`EpisodeOptions`: agent and sandbox; `WorkerConfig`: groups and budgets;
`EpisodeConfig`; `GradingConfig`; `TaskOptions`) and TRL's `AsyncGRPOConfig`; every knob is defined once, in the dataclass that
owns it (intercept_common.config_tree). The worker's sampling and group knobs that TRL also defines (`temperature`,
`top_p`, `top_k`, `num_generations`, `max_staleness`, `seed`, `queue_maxsize`, and `max_completion_length` for the
worker's `max_completion_tokens`) are TRL's: the trainer and the engine must agree on them.

Flags (`--learning-rate` or `--learning_rate`) and `--config file.yaml` (flat, or nested by section: `worker`,
`episode`, `grading`, `container_grading`, `gate`, `sandbox: {backend, ...}`, `agent: {name}`; each section holds only
its own config's keys, ours and TRL's other options are top-level). A `--preset` only changes defaults: precedence
is flag > config file > preset > built-in default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from control_plane import GateConfig
from intercept_common.config_tree import build, cli_view, load_config_file, parse_config_tree, split_config_flag
from intercept_common.context_length import MAX_MODEL_LEN_HELP, check_max_model_len, resolve_max_model_len
from intercept_common.errors import ConfigError
from rollout_worker.config import WorkerConfig
from rollout_worker.config_views import EXTRA_KEYS, build_rollout_side, rollout_side_views
from rollout_worker.environment.episode import EpisodeConfig
from rollout_worker.environment.grading.host import GradingConfig
from rollout_worker.factory import ContainerGradingConfig, EpisodeOptions, TaskOptions
from trainer.modes import OffPolicyCorrection, TreeAttention, VllmWeightSync, parse_choice

# WorkerConfig fields TRL defines too (or that training sets itself): they come from AsyncGRPOConfig / the builder.
WORKER_FIELDS_FROM_TRL = ("num_generations", "temperature", "top_p", "top_k", "max_completion_tokens",
                          "max_staleness", "seed", "queue_maxsize", "keep_trajectories", "max_queued_samples",
                          "max_groups", "samples_per_version")
WorkerOptions = cli_view(WorkerConfig, exclude=WORKER_FIELDS_FROM_TRL)

GATE_SECRET_ENV = "INTERCEPT_RL_GATE_SECRET"

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
# `make demo`: a run whose reward visibly rises within ~10 minutes on 2 cores, by the learning benchmark's mechanism
# (bench/learning.py, docs/benchmarks.md): the `single-shot` agent in a bubblewrap sandbox writes the policy's reply
# into `answer.txt`, graded host-side as the fraction of ten checks on its share of lowercase letters; a random tiny
# Qwen3 with a peaked init (`embedded-peaked`, init scale 0.5) whose sampled tokens recur often enough for GRPO to
# move the reward; 8 rollouts per group, every step on-policy (`max_staleness` 0), lr 1e-2. The same stack as
# cpu-demo (engine, gate, sandbox, grader, TRL, weight sync); no special-casing. With the worker's bounded run-ahead
# (on by default) nothing generated is dropped. Staleness 2 was no faster on 2 cores and learned worse: not at all
# without an off-policy correction, later than staleness 0 with one (bench/off_policy.py, docs/benchmarks.md).
PRESETS["learning-demo"] = {
    **PRESETS["cpu-demo"],
    "model_name_or_path": "embedded-peaked",
    "tasks": "learning",
    "agent": "single-shot",
    "reward_mode": "fraction",
    "num_generations": 8,
    "per_device_train_batch_size": 8,
    "max_inflight": 8,
    "max_turns": 1,
    "max_tokens_per_turn": 4,
    "max_completion_length": 4,
    "learning_rate": 1e-2,
    "max_staleness": 0,
    "max_steps": 30,
    "seed": 0,
    "save_steps": 100000,
    "output_dir": "runs/learning-demo",
    "project": "intercept-rl-learning-demo",
}
# Multi-turn learning with a real agent (issue 26, bench/multiturn_learning.py): the warm-started tiny Qwen3
# (`intercept-rl warm-start`, built on first use) acts as mini-swe-agent's model over several turns — look at the
# code, edit it with sed, submit — in bubblewrap; the reward is the tasks' own tests. The tasks are the embedded ones
# whose fix is one or two line edits (22-42 tokens of sed), the ones the 2-layer policy sometimes gets right, so GRPO
# has groups with both outcomes: temperature 0.7 (7 of 12 rollouts solved; 4 of 12 at temperature 1, and a 10-step
# run at 1.0 with lr 2e-3 solved 3 of 48 and learned nothing, docs/benchmarks.md). `max_staleness 1`, not learning-demo's 0: a turn without
# a tool call forks mini-swe-agent's history, so a group gives a varying number of samples (~2 per rollout); at 0 the
# ones past the step's fixed-count batch would be dropped as stale, at 1 they are trained at the next step (PPO-clip
# against their behaviour log-probs), so every fork is trained.
PRESETS["mini-swe-warm"] = {
    **PRESETS["cpu-demo"],
    "model_name_or_path": "embedded-mini-warm",
    "tasks": "embedded:dateranges,iniconf,lrukit,wraptext,intervals,retrykit",
    "agent": "mini-swe-agent",
    "num_generations": 4,
    "per_device_train_batch_size": 8,
    "max_inflight": 4,
    "max_turns": 4,
    "max_tokens_per_turn": 128,
    "max_completion_length": 2048,
    "temperature": 0.7,
    "learning_rate": 5e-4,
    "max_staleness": 1,
    "max_steps": 10,
    "seed": 0,
    "save_steps": 100000,
    "output_dir": "runs/mini-swe-warm",
    "project": "intercept-rl-mini-swe-warm",
}


@dataclass
class SweTrainArguments:
    """What only training has (model, engine, gate, LoRA), plus the rollout side's configs it composes."""

    _argument_group_name = "Model, engine, gate, LoRA (trainer.config.SweTrainArguments)"

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
            "help": "Base URL of a running vLLM server (`--vllm-weight-sync` says how weights reach it). Unset: "
            "start the local engine on this machine (stopped when training ends) and sync weights over HTTP."
        },
    )
    vllm_weight_sync: VllmWeightSync = field(
        default=VllmWeightSync.NCCL,
        metadata={
            "help": "How weights reach vLLM: 'nccl' (vLLM on other GPUs, TRL's NCCL client), 'ipc' (vLLM on the "
            "trainer's own GPU, CUDA IPC), 'disk' (HTTP only: safetensors into --weight-sync-dir, vLLM reloads them; "
            "for a remote engine that reads a shared directory), 'lora' (with --use-peft: TRL publishes the adapter, "
            "vLLM loads it at runtime). The matching `vllm serve` line: trainer.vllm_weight_sync.vllm_serve_command."
        },
    )
    weight_sync_dir: str | None = field(
        default=None,
        metadata={"help": "'disk' sync: where the trainer writes each version (default <output_dir>/weight_sync)."},
    )
    engine_weight_sync_dir: str | None = field(
        default=None,
        metadata={"help": "'disk' sync: the same directory as the vLLM server sees it (default: --weight-sync-dir)."},
    )
    max_model_len: int | None = field(default=None, metadata={"help": MAX_MODEL_LEN_HELP})
    gate_host: str = field(
        default="127.0.0.1", metadata={"help": "Where the interception gate listens (agents reach it through it)."}
    )
    gate_port: int = field(
        default=0,
        metadata={"help": "The gate's port; 0 picks a free one. A Space fixes it (its status page proxies /rollout/... "
                  "to it). The gate's secret, which rollout keys derive from, is read from the environment variable "
                  f"{GATE_SECRET_ENV} when set (never a flag: it would show in `ps`); random otherwise."},
    )
    engine_startup_timeout_s: float = field(
        default=300.0, metadata={"help": "How long to wait for the local engine to become healthy."}
    )
    engine_replicas: int = field(
        default=1,
        metadata={"help": "Local engines to start (without --vllm-url), each a replica of the policy: every rollout "
                  "stays on one, new ones go to the least loaded, and each weight update reaches every replica (all "
                  "paused, each pushed and checked, all resumed) before the version is announced (docs/scale.md)."},
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
    tree_attention: TreeAttention = field(
        default=TreeAttention.AUTO,
        metadata={
            "help": "Tree-packed attention: 'auto' (Hub FA3 kernel when it loads, else the torch SDPA fallback), "
            "'torch' (always the fallback), 'kernel' (never patch)."
        },
    )
    off_policy_correction: OffPolicyCorrection = field(
        default=OffPolicyCorrection.NONE,
        metadata={
            "help": "Correct the loss for the policy lag of stale samples (trainer/off_policy.py, formulas there and "
            "in docs/benchmarks.md): 'none' (TRL's PPO-clip against the behaviour log-probs), 'tis' (truncated "
            "importance sampling), 'mis-token' / 'mis-seq' (masked IS per token / per sequence), 'decoupled' "
            "(AReaL's decoupled PPO). Every mode but 'none' costs one extra forward (no gradient) per micro-batch."
        },
    )
    off_policy_is_cap: float = field(
        default=2.0,
        metadata={"help": "Upper bound C on the behaviour importance weight π_old/μ: truncated to C ('tis'), or the "
                  "token/sequence is masked above it ('mis-*', 'decoupled')."},
    )
    off_policy_is_floor: float = field(
        default=0.5,
        metadata={"help": "'mis-token' / 'mis-seq': tokens / sequences whose weight π_old/μ is below this are masked."},
    )
    # The rollout side's own configs, composed (filled by `parse_train_args` from their flags and file sections).
    task_options: TaskOptions = field(default_factory=TaskOptions)
    episode_options: EpisodeOptions = field(default_factory=EpisodeOptions)
    worker: Any = field(default_factory=lambda: WorkerOptions())  # WorkerConfig minus what TRL owns
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)
    grading: GradingConfig = field(default_factory=GradingConfig)
    container_grading: ContainerGradingConfig = field(default_factory=ContainerGradingConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    trackio_dir: str | None = field(
        default=None,
        metadata={"help": "Local Trackio directory (SQLite per project); default: <output_dir>/trackio."},
    )

    def __post_init__(self) -> None:
        # `preset` is checked once, by `preset_defaults`, which reads it before the parser (and TRL) are built.
        # A flag's bad value is argparse's `invalid choice`; a config file's (set as a default, which argparse does not
        # check against the choices) is caught here, in the file's own spelling.
        self.tree_attention = parse_choice(TreeAttention, self.tree_attention, "tree_attention")
        self.vllm_weight_sync = parse_choice(VllmWeightSync, self.vllm_weight_sync, "vllm_weight_sync")
        check_max_model_len(self.max_model_len)
        if self.lora_r < 1:
            raise ConfigError("lora_r must be >= 1")
        self.off_policy_correction = parse_choice(OffPolicyCorrection, self.off_policy_correction,
                                                  "off_policy_correction")
        if not 0 <= self.off_policy_is_floor < self.off_policy_is_cap:
            raise ConfigError(f"need 0 <= off_policy_is_floor < off_policy_is_cap, got {self.off_policy_is_floor} and "
                              f"{self.off_policy_is_cap}")


DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Our defaults for TRL's own fields, under every preset: local Trackio logging, and a project name of ours.
BASE_DEFAULTS: dict[str, Any] = {"report_to": ["trackio"], "project": "intercept-rl", "logging_steps": 1}


TrainOptions = cli_view(SweTrainArguments)
# The dataclasses `train` parses, in help order; TRL's AsyncGRPOConfig is appended by `make_parser`.
OUR_DATACLASSES = (TrainOptions, *rollout_side_views(WorkerOptions))


def make_parser():
    """The `TrlParser` over our dataclasses and AsyncGRPOConfig; imported lazily because TRL is heavy."""
    import torch

    from intercept_common.trl_api import AsyncGRPOConfig, TrlParser

    parser = TrlParser((*OUR_DATACLASSES, AsyncGRPOConfig), prog="intercept-rl train")
    # TRL defaults to bf16 autocast, which transformers refuses without a GPU; keep it only where it can run.
    parser.set_defaults(**BASE_DEFAULTS, bf16=torch.cuda.is_available())
    return parser


def _preset_name(argv: list[str]) -> str | None:
    """The preset named on the command line (the last `--preset`, as argparse reads it; both spellings of the flag),
    else in the `--config` file."""
    named = None
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            named = argv[i + 1]
        elif arg.startswith("--preset="):
            named = arg.split("=", 1)[1]
    if named is not None:
        return named
    path, _ = split_config_flag(argv)
    if path is not None:
        preset = load_config_file(path).get("preset")
        return str(preset) if preset else None
    return None


def preset_defaults(argv: list[str]) -> dict[str, Any]:
    """The defaults of the preset `argv` names (flag or `--config` file), `{}` without one.

    The one check of the preset's name, on the raw argv, before TRL is imported or the parser built (`train` calls it
    first through `early_trackio_dir`, then `parse_train_args` for the defaults).
    """
    name = _preset_name(argv)
    if name is not None and name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name] if name is not None else {}


def parse_train_args(argv: list[str] | None = None):
    """Parse flags / `--config` (over a `--preset`) into `(SweTrainArguments, AsyncGRPOConfig)` and validate them.

    The returned `SweTrainArguments` carries the composed rollout-side configs (`task_options`, `episode_options`, `worker`,
    `episode`, `grading`).
    """
    argv = list(argv or [])
    defaults = preset_defaults(argv)  # before the parser: a bad preset name costs no TRL import
    parser = make_parser()
    (options, *side, training), extras = parse_config_tree(parser, argv, defaults=defaults, extra_keys=EXTRA_KEYS)
    script_args = build(SweTrainArguments, options, **build_rollout_side(side, extras)._asdict())
    validate(script_args, training)
    return script_args, training


def print_help(full: bool) -> None:
    """`--help`: our options, grouped by the config that owns them; `--help-all`: TRL's and transformers' too."""
    if full:
        make_parser().print_help()
        return
    from transformers import HfArgumentParser

    parser = HfArgumentParser(OUR_DATACLASSES, prog="intercept-rl train")
    parser.description = ("Train with TRL's AsyncGRPOTrainer on agent rollouts. Options also come from --config "
                          "FILE.yaml (flat, or nested by section: worker, episode, grading, container_grading, gate, "
                          "sandbox: {backend, ...}, agent: {name}); precedence: flag > config file > --preset > default. --verbose: the full "
                          "log on the terminal too (it always goes to <output_dir>/train.log).")
    parser.epilog = ("TRL's training options (learning_rate, max_steps, num_generations, temperature, "
                     "max_completion_length, max_staleness, weight_sync_steps, token_budget, output_dir, save_steps, "
                     "resume_from_checkpoint, report_to, project, seed, ...) and every transformers TrainingArguments "
                     "field: intercept-rl train --help-all")
    parser.print_help()


def worker_config(script: SweTrainArguments, training, **set_by_the_run: Any) -> WorkerConfig:
    """The worker's config: its own knobs as parsed; those TRL also defines from TRL's config, so the engine samples
    exactly as the trainer scores; `set_by_the_run` (served model name, queue bound, ...) for the rest."""
    return build(
        WorkerConfig, script.worker,
        num_generations=training.num_generations,
        temperature=training.temperature,
        top_p=training.top_p,
        top_k=training.top_k if training.top_k and training.top_k > 0 else -1,
        max_completion_tokens=training.max_completion_length,
        max_staleness=training.max_staleness,
        seed=training.seed,
        queue_maxsize=training.queue_maxsize,
        **set_by_the_run,
    )


def validate(script_args: SweTrainArguments, training_args) -> None:
    """Cross-field checks with messages that say which flag to change; the worker's whole config included (with
    TRL's sampling and group values), so a value it rejects fails here, before anything starts."""
    worker_config(script_args, training_args)
    if not script_args.model_name_or_path:
        raise ConfigError("--model-name-or-path is required (or use --preset cpu-demo)")
    if script_args.vllm_url is None and training_args.token_budget is None and script_args.max_model_len:
        # Without vLLM, TRL would otherwise block on a vLLM /health that never answers (design §4). Unset, the model's
        # max positions: `resolve_token_budget`, once the model's directory is known.
        training_args.token_budget = script_args.max_model_len
    if training_args.trackio_space_id and training_args.hub_private_repo is None:
        training_args.hub_private_repo = True  # a dashboard Space is private unless the user says otherwise
    if training_args.per_device_train_batch_size < 1 or training_args.gradient_accumulation_steps < 1:
        raise ConfigError("--per-device-train-batch-size and --gradient-accumulation-steps must be >= 1, got "
                          f"{training_args.per_device_train_batch_size} and {training_args.gradient_accumulation_steps}")
    if training_args.max_steps is None or training_args.max_steps <= 0:
        raise ConfigError("--max-steps must be > 0: rollouts are a live stream, there are no epochs")
    if script_args.vllm_weight_sync is not VllmWeightSync.NCCL and not script_args.vllm_url:
        raise ConfigError(f"--vllm-weight-sync {script_args.vllm_weight_sync} needs --vllm-url (without it the local "
                         "engine runs here and syncs over HTTP)")
    if script_args.engine_replicas < 1:
        raise ConfigError(f"--engine-replicas must be >= 1, got {script_args.engine_replicas}")
    if script_args.engine_replicas > 1 and script_args.vllm_url:
        raise ConfigError("--engine-replicas starts local engines; with --vllm-url the one vLLM server is the engine "
                          "(several vLLM servers under train: docs/scale.md)")
    if script_args.vllm_weight_sync is VllmWeightSync.LORA and not script_args.use_peft:
        raise ConfigError("--vllm-weight-sync lora publishes a LoRA adapter: add --use-peft")
    if script_args.use_peft and script_args.lora_target_modules:
        if any("lm_head" in m or "embed_tokens" in m for m in script_args.lora_target_modules):
            raise ConfigError("--lora-target-modules must not include lm_head / embed_tokens (TRL refuses LoRA there)")


def resolve_token_budget(script_args: SweTrainArguments, training_args, model_path: str) -> None:
    """Without vLLM and without `--token-budget`: the local engine's context, which is the model's max positions when
    `--max-model-len` is unset (read from the model's config; a one-line error if it gives none)."""
    if script_args.vllm_url is None and training_args.token_budget is None:
        training_args.token_budget = resolve_max_model_len(script_args.max_model_len, model_path)


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
    file_values: dict[str, Any] = load_config_file(known.config) if known.config else {}
    preset = preset_defaults(argv)

    def pick(key: str, flag_value):
        return flag_value if flag_value is not None else file_values.get(key, preset.get(key))

    trackio_dir = pick("trackio_dir", known.trackio_dir)
    output_dir = pick("output_dir", known.output_dir) or "trainer_output"
    return os.path.abspath(trackio_dir or os.path.join(output_dir, "trackio"))


def trackio_dir_for(script_args: SweTrainArguments, training_args) -> str:
    """Where local Trackio writes `<project>.db`: `--trackio-dir`, else `<output_dir>/trackio`."""
    return os.path.abspath(script_args.trackio_dir or os.path.join(training_args.output_dir, "trackio"))
