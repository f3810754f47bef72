"""The rollout side of intercept-rl: serve agents token-exactly, run them in sandboxes, grade them, group them.

The seams are Protocols (declared in `rollout_worker.protocols`, re-exported here); one small module per
implementation sits behind each. A run wires them like this (what `factory.build_worker` does from config)::

    from rollout_worker.config import WorkerConfig
    from rollout_worker.environment.agents import get_agent             # AgentLauncher: pi, mini-swe-agent, cmd:...
    from rollout_worker.environment.episode import SandboxEpisodeRunner  # EpisodeRunner
    from rollout_worker.environment.grading.host import FailPassGrader        # Grader (over a TestExecutor)
    from rollout_worker.environment.sandbox import LocalSandboxTestExecutor, get_backend  # SandboxBackend
    from rollout_worker.factory import build_worker

    runner = SandboxEpisodeRunner(get_backend("local"), get_agent("pi"), FailPassGrader(LocalSandboxTestExecutor()))
    worker = build_worker(WorkerConfig(), tasks=tasks, episode_runner=runner, tokenizer=tokenizer,
                          engine_url="http://127.0.0.1:8000")
    worker.start()   # TRL's AsyncGRPOTrainer reads worker.rollout_buffer; the worker serves the gate meanwhile

Two halves that never import each other (enforced by the import-linter contracts in pyproject.toml):
`serving/` (messages -> prompt ids -> `Engine` -> reply) and `environment/` (sandbox, agent, grading, tasks).
"""

from .outcomes import AgentEnd, EpisodeStatus, ForkReason, OverlongPolicy, TurnEnd
from .protocols import (
    AgentLauncher,
    Engine,
    EpisodeRunner,
    Grader,
    Sandbox,
    SandboxBackend,
    SandboxProcess,
    TestExecutor,
)
from .types import AgentCommand, Completion, EpisodeResult, ExecResult, GradeResult, RolloutEndpoint, Task

__all__ = [
    "AgentCommand", "AgentEnd", "AgentLauncher", "Completion", "Engine", "EpisodeResult", "EpisodeRunner",
    "EpisodeStatus", "ExecResult", "ForkReason", "GradeResult", "Grader", "OverlongPolicy", "RolloutEndpoint",
    "Sandbox", "SandboxBackend", "SandboxProcess", "Task", "TestExecutor", "TurnEnd",
]
