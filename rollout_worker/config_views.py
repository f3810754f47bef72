"""The rollout side's configs as a command parses them: one set of `cli_view`s, one way back to the real configs.

`intercept-rl rollouts` and `intercept-rl train` both parse the same seven dataclasses in the same order (tasks,
agent and sandbox, worker, episode budget, grading, container grading, gate); only the worker's view differs (each
command sets, or takes from TRL, some of `WorkerConfig`'s fields itself). `build_rollout_side` turns what they parsed,
plus the config file's selector sections (`sandbox: {backend, ...}`, `agent: {name}`), into the real configs and is
the one place that refuses what no config can take.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from control_plane import GateConfig
from intercept_common.config_tree import build, cli_view
from intercept_common.errors import ConfigError

from .environment.episode import EpisodeConfig
from .environment.grading.host import GradingConfig
from .factory import ContainerGradingConfig, EpisodeOptions, TaskOptions

GateOptions = cli_view(GateConfig)
TaskSelection = cli_view(TaskOptions)
EpisodeSelection = cli_view(EpisodeOptions)
EpisodeBudget = cli_view(EpisodeConfig)
GradingOptions = cli_view(GradingConfig)
ContainerGradingOptions = cli_view(ContainerGradingConfig)

# The config file's selector sections come back as these keys (intercept_common.config_tree.SELECTOR_SECTIONS).
EXTRA_KEYS = ("sandbox_options", "agent_options")


def rollout_side_views(worker: type) -> tuple[type, ...]:
    """The rollout side's dataclasses, in help order, with the command's `worker` view (`cli_view(WorkerConfig,
    exclude=...)`); parse them in this order."""
    return (TaskSelection, EpisodeSelection, worker, EpisodeBudget, GradingOptions, ContainerGradingOptions,
            GateOptions)


class RolloutSide(NamedTuple):
    """The real rollout-side configs (names as `trainer.config.SweTrainArguments` holds them). `worker` stays the
    command's view: the command completes it (`build(WorkerConfig, worker, ...)`) with what it sets itself."""

    task_options: TaskOptions
    episode_options: EpisodeOptions
    worker: Any
    episode: EpisodeConfig
    grading: GradingConfig
    container_grading: ContainerGradingConfig
    gate: GateConfig


def build_rollout_side(parsed: Sequence[Any], extras: dict[str, Any]) -> RolloutSide:
    """The real configs from the instances of `rollout_side_views` (same order) and the config file's `extras`."""
    if extras.get("agent_options"):
        raise ConfigError(f"agent options {sorted(extras['agent_options'])} in section 'agent' are not supported: "
                          "agents take none")
    task_view, selection, worker, budget, grading_view, container_view, gate_view = parsed
    grading = build(GradingConfig, grading_view)
    return RolloutSide(
        task_options=build(TaskOptions, task_view),
        episode_options=build(EpisodeOptions, selection, sandbox_options=extras.get("sandbox_options", {})),
        worker=worker,
        episode=build(EpisodeConfig, budget),
        grading=grading,
        container_grading=build(ContainerGradingConfig, container_view, grading=grading),
        gate=build(GateConfig, gate_view),
    )
