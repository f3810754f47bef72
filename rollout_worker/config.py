"""Configuration of the rollout worker: how many rollouts, how they sample, when they end."""

from __future__ import annotations

from dataclasses import dataclass, field

from intercept_common.errors import ConfigError
from intercept_common.served_model import DEFAULT_SERVED_MODEL_NAME

from .outcomes import OverlongPolicy


@dataclass
class WorkerConfig:
    """Knobs of [`rollout_worker.worker.RolloutWorker`].

    Sampling belongs to the trainer: `temperature`, `top_p` and `top_k` here are what the engine samples with, and the
    agent's own sampling values are ignored (the PPO ratio is computed at the trainer's temperature, so letting the
    agent change it would silently bias the update). The agent's `max_tokens` / `max_completion_tokens` is honoured
    only below `max_tokens_per_turn`.
    """

    _argument_group_name = "Worker: groups, sampling, budgets (rollout_worker.config.WorkerConfig)"
    _config_section = "worker"  # its YAML section (intercept_common.config_tree)

    served_model_name: str = field(
        default=DEFAULT_SERVED_MODEL_NAME,
        metadata={"help": "Model name the engine serves and the agents are told to use. With a running engine that "
                  "does not serve `policy` but exactly one other model, that one is used."},
    )
    chat_template: str | None = field(
        default=None,
        metadata={"help": "Prefix-preserving training chat template the prompts are rendered with (a path or the jinja "
                  "text); default: the tokenizer's when prefix-preserving, else TRL's training variant of it."},
    )
    num_generations: int = field(
        default=1, metadata={"help": "Rollouts per task; one GRPO group (`train` takes TRL's num_generations)."}
    )
    max_inflight: int = field(default=4, metadata={"help": "Rollouts (agents + sandboxes) running at once."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (the trainer's)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling; keep 1.0 for an unbiased PPO ratio."})
    top_k: int = field(default=-1, metadata={"help": "Top-k sampling; -1 disables it."})
    max_tokens_per_turn: int = field(
        default=1024, metadata={"help": "Cap on tokens sampled per agent call (the agent may ask for fewer)."}
    )
    max_turns: int = field(default=30, metadata={"help": "Agent calls per rollout before the budget ends it."})
    max_completion_tokens: int | None = field(
        default=None, metadata={"help": "Sampled tokens per rollout before the budget ends it (None: no cap)."}
    )
    budget_grace_s: float = field(
        default=30.0,
        metadata={
            "help": "Once the reply that spends the completion-token budget is sent, how long the agent may still act "
            "on it (run its last command, write its answer, exit) before it is stopped and graded. A further model "
            "call ends the rollout at once (HTTP 400 budget_exceeded)."
        },
    )
    max_staleness: int | None = field(
        default=None,
        metadata={
            "help": "End a rollout early (unscorable) once the live policy is this many versions ahead of its first "
            "turn. None keeps every rollout; TRL still drops stale samples at dequeue."
        },
    )
    overlong_policy: OverlongPolicy = field(
        default=OverlongPolicy.EXCLUDE,
        metadata={
            "help": "What a rollout whose prompt outgrew the engine's max_model_len becomes: 'exclude' (unscorable, "
            "not trained) or 'zero' (reward 0, trained)."
        },
    )
    drop_zero_variance_groups: bool = field(
        default=True,
        metadata={"help": "Drop groups whose scorable rewards are all equal (no learning signal); counted."},
    )
    advantage_eps: float = field(default=1e-8, metadata={"help": "Added to the group std (TRL's value)."})
    seed: int = field(default=0, metadata={"help": "Seed of the task order (reshuffled every pass)."})
    max_groups: int | None = field(
        default=None, metadata={"help": "Stop launching after this many groups (None: run until stopped)."}
    )
    next_call_poll_s: float = field(
        default=900.0, metadata={"help": "Longest wait for an agent's next call before the rollout is checked."}
    )
    episode_timeout_s: float = field(
        default=1800.0, metadata={"help": "Hard cap on one rollout (agent + grading); past it the rollout is cancelled."}
    )
    engine_timeout_s: float = field(default=600.0, metadata={"help": "Timeout of one engine completion call."})
    cluster: str | None = field(
        default=None,
        metadata={"help": "Run rollouts on rollout nodes of a Ray cluster (the `ray` extra): `ray` (a Ray instance "
                  "started for this run on this machine, max_inflight sandbox slots), `ray:auto` (the cluster this "
                  "machine joined with ray start) or `ray:HOST:PORT`. Each machine advertising a sandbox_slots "
                  "resource gets one node (a gate shard, its sandboxes, at most that many rollouts at once); records "
                  "name their node. Unset: every rollout in this process (docs/scale.md)."},
    )
    engine_down_grace_s: float = field(
        default=60.0,
        metadata={"help": "When every engine replica has stopped answering (connection refused on every retry), how "
                  "long to wait for one to answer /health again before the run ends (docs/scale.md)."},
    )
    queue_maxsize: int = field(
        default=4096, metadata={"help": "Capacity of the sample queue; the worker stops launching when it is full."}
    )
    max_queued_samples: int | None = field(
        default=None,
        metadata={
            "help": "Stop launching rollouts while this many samples wait for the trainer: bounds how far rollouts "
            "run ahead of the policy (staleness). None: half of queue_maxsize."
        },
    )
    samples_per_version: int | None = field(
        default=None,
        metadata={
            "help": "Samples the trainer trains per policy version (`train` sets it from the batch size and "
            "weight_sync_steps; None when a token budget makes it unknown). With max_staleness it bounds run-ahead."
        },
    )
    bound_run_ahead: bool = field(
        default=True,
        metadata={
            "help": "Launch a rollout only while everything queued and in flight can still be trained within "
            "max_staleness versions (needs samples_per_version), so almost nothing generated is dropped as stale. "
            "False: keep max_inflight rollouts going and let the trainer drop what went stale (the old behaviour)."
        },
    )
    keep_trajectories: bool = field(
        default=False, metadata={"help": "Also publish full trajectory records (for `intercept-rl rollouts`)."}
    )

    def __post_init__(self) -> None:
        if self.num_generations < 1:
            raise ConfigError("num_generations must be >= 1")
        if self.max_inflight < 1:
            raise ConfigError("max_inflight must be >= 1")
        try:
            self.overlong_policy = OverlongPolicy(self.overlong_policy)
        except ValueError:
            raise ConfigError(f"overlong_policy must be 'exclude' or 'zero', got {self.overlong_policy!r}") from None
        if self.temperature < 0:
            raise ConfigError("temperature must be >= 0")
        if self.cluster is not None:
            from .nodes.cluster import ClusterSpec

            ClusterSpec.parse(self.cluster)
        if self.engine_down_grace_s < 0:
            raise ConfigError(f"engine_down_grace_s must be >= 0, got {self.engine_down_grace_s}")
        if self.budget_grace_s < 0:
            raise ConfigError("budget_grace_s must be >= 0")
        if self.samples_per_version is not None and self.samples_per_version < 1:
            raise ConfigError("samples_per_version must be >= 1 (or None)")
        if self.max_staleness is not None and self.max_staleness < 0:
            raise ConfigError(f"max_staleness must be >= 0, got {self.max_staleness}")
        if self.max_tokens_per_turn < 1 or self.max_turns < 1:
            raise ConfigError("max_tokens_per_turn and max_turns must be >= 1")
