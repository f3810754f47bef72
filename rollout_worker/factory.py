"""Assembling a worker from names: the one place `rollouts` and `train` turn their options into parts."""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import WorkerConfig
from .types import Task


@dataclass
class EpisodeOptions:
    """How each episode runs: which agent, in which sandbox, graded how."""

    agent: str = field(
        default="mini-swe-agent",
        metadata={"help": "Agent: oracle | noop | mini-swe-agent | pi | cmd:<shell command>."},
    )
    sandbox: str = field(default="local", metadata={"help": "Sandbox backend: local (bubblewrap) | docker."})
    reward: str = field(
        default="binary", metadata={"help": "binary (1 only if every test passes) | fraction (passing fraction)."}
    )
    agent_timeout_s: float = field(default=600.0, metadata={"help": "Agent wall-time budget per rollout."})
    grading_timeout_s: float = field(default=300.0, metadata={"help": "Limit of the grading test run."})


def build_episode_runner(options: EpisodeOptions):
    """A `SandboxEpisodeRunner` for the named agent, sandbox and reward mode."""
    from .environment.agents import get_agent
    from .environment.episode import EpisodeConfig, SandboxEpisodeRunner
    from .environment.grading import FailPassGrader, GradingConfig
    from .environment.sandbox import get_backend

    if options.reward not in ("binary", "fraction"):
        raise ValueError(f"--reward must be 'binary' or 'fraction', got {options.reward!r}")
    backend = get_backend(options.sandbox)
    grader = FailPassGrader(_test_executor(options.sandbox),
                    GradingConfig(reward_mode=options.reward, timeout_s=options.grading_timeout_s))
    return SandboxEpisodeRunner(backend, get_agent(options.agent), grader,
                                EpisodeConfig(wall_time_s=options.agent_timeout_s))


def _test_executor(sandbox: str):
    """Grading runs in a fresh bubblewrap sandbox on the host for every agent sandbox backend: the grader needs the
    task's pristine `repo_dir` on the host anyway, and a fresh local sandbox has no network and nothing of the
    agent's but its diff."""
    if sandbox not in ("local", "docker"):
        raise ValueError(f"unknown sandbox backend {sandbox!r}: expected 'local' or 'docker'")
    from .environment.sandbox import LocalSandboxTestExecutor

    return LocalSandboxTestExecutor()


def build_worker(config: WorkerConfig, *, tasks: list[Task], episode_runner, tokenizer, chat_template: str | None,
                 engine_url: str, gate_host: str = "127.0.0.1", gate_port: int = 0):
    """A `RolloutWorker` with the training template resolved (explicit template > prefix-preserving > TRL's)."""
    from .serving.chat_template import resolve_training_template
    from .worker import RolloutWorker

    template = resolve_training_template(tokenizer, chat_template)
    return RolloutWorker(config, tasks=tasks, episode_runner=episode_runner, tokenizer=tokenizer,
                         chat_template=template, engine_url=engine_url, gate_host=gate_host, gate_port=gate_port)


def load_tokenizer(model: str):
    """The tokenizer of `model` (a path or hub name); `embedded` is the tiny demo model's real Qwen3 tokenizer."""
    if model == "embedded":
        from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer

        return load_qwen3_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)
