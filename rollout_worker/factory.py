"""Assembling a worker from names: the one place `rollouts` and `train` turn their options into parts."""

from __future__ import annotations

import dataclasses
import functools
import shutil
from dataclasses import dataclass, field, fields
from typing import Any

from control_plane import GateConfig
from intercept_common.errors import ConfigError, UserError

from .config import WorkerConfig
from .environment.episode import EpisodeConfig
from .environment.grading.container_common import ContainerGradingConfig
from .environment.grading.host import GradingConfig
from .environment.tasks.schema import SWE_GYM_IMAGE_TEMPLATE
from .types import Task


@dataclass
class TaskOptions:
    """Where the tasks come from (`rollouts` and `train` alike)."""

    _argument_group_name = "Tasks (rollout_worker.factory.TaskOptions)"

    tasks: str = field(
        default="embedded",
        metadata={"help": "embedded | learning | synth[:PKG,...] (the shipped synthesized tasks, --sandbox docker) | "
                  "PATH (.json/.jsonl/.parquet, SWE-bench/SWE-Gym rows) | a Harbor task directory | a Hub dataset name."})
    task_split: str = field(default="train", metadata={"help": "Dataset split of hub/parquet tasks."})
    max_tasks: int | None = field(default=None, metadata={"help": "Use at most this many tasks."})
    image_template: str = field(
        default=SWE_GYM_IMAGE_TEMPLATE,
        metadata={"help": "Docker image of a SWE row that names none: fields {instance_id}, {repo}, {docker_id}, "
                  "{swebench_id}. SWE-Gym's naming by default; SWE-bench's official images: "
                  "swebench/sweb.eval.x86_64.{swebench_id}:latest."})

    def __post_init__(self) -> None:
        if self.max_tasks is not None and self.max_tasks < 1:
            raise ConfigError(f"max_tasks must be >= 1 (unset: every task), got {self.max_tasks}")


def load_task_options(options: TaskOptions, seed: int) -> list[Task]:
    """The tasks `options` name, in the seeded order; a clear error when there are none."""
    from .environment.tasks import load_tasks
    from .environment.tasks.loader import TaskLoadError

    tasks = load_tasks(options.tasks, split=options.task_split, max_tasks=options.max_tasks, seed=seed,
                       image_template=options.image_template)
    if not tasks:
        raise TaskLoadError(f"--tasks {options.tasks!r} yielded no tasks")
    return tasks


@dataclass
class EpisodeOptions:
    """Which agent runs in which sandbox backend. Budgets and grading have their own configs (`EpisodeConfig`,
    `GradingConfig`); this only selects the parts."""

    _argument_group_name = "Agent and sandbox (rollout_worker.factory.EpisodeOptions)"

    agent: str = field(
        default="mini-swe-agent",
        metadata={"help": "Agent CLI run in each sandbox: mini-swe-agent | pi | qwen-code | opencode | claude-code "
                  "(Anthropic Messages) | codex (OpenAI Responses) | gemini-cli (Gemini API) | cmd:<shell command> | "
                  "single-shot | oracle | noop. Each declares how it wants a turn the token limit cut "
                  "(--report-truncation overrides; docs/agents.md)."},
    )
    sandbox: str = field(default="local", metadata={"help": "Sandbox backend: local (bubblewrap) | docker."})
    sandbox_options: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Fields of the backend's config (YAML `sandbox: {backend: docker, mem_limit: 4g}`)."},
    )

    def __post_init__(self) -> None:  # the backend's name and options, checked here: before anything starts
        from .environment.sandbox import sandbox_config

        sandbox_config(self.sandbox, **self.sandbox_options)


def build_episode_runner(options: EpisodeOptions, episode: EpisodeConfig | None = None,
                         grading: GradingConfig | None = None, container_grading: ContainerGradingConfig | None = None):
    """A `SandboxEpisodeRunner` for the selected agent and sandbox, with the episode budgets and grading given.

    With `--sandbox docker`, the container graders get `container_grading` (its container limits) with `grading` as
    its shared grading config: one set of grading knobs for every grader."""
    from .environment.agents import get_agent
    from .environment.episode import SandboxEpisodeRunner
    from .environment.grading.host import FailPassGrader
    from .environment.sandbox import get_backend

    backend = get_backend(options.sandbox, **options.sandbox_options)
    grading = grading or GradingConfig()
    grader = FailPassGrader(_test_executor(options.sandbox), grading)
    if options.sandbox == "docker":
        # Tasks that come as images (SWE-bench/SWE-Gym rows, Harbor dirs) are graded in a fresh container of their
        # image, like the official harness; tasks with a host repository keep the host grader.
        from .environment.grading.harbor_container import HarborContainerGrader
        from .environment.grading.swebench_container import ImageAwareGrader, SweBenchContainerGrader

        in_container = dataclasses.replace(container_grading or ContainerGradingConfig(), grading=grading)
        grader = ImageAwareGrader(grader, SweBenchContainerGrader(in_container), HarborContainerGrader(in_container))
    return SandboxEpisodeRunner(backend, get_agent(options.agent), grader, episode or EpisodeConfig())


class EngineNotServingError(RuntimeError, UserError):
    """The engine at --engine-url cannot be reached, or serves no model by the name the worker would ask for."""


def served_model_name_for(configured: str, engine_url: str | None) -> str:
    """The model name to ask the engine for: `configured` (WorkerConfig.served_model_name) when this command starts
    the engine (`engine_url` None) or the engine serves it; the engine's only model when `configured` is the default
    and the engine serves exactly one other; else a clear error listing what the engine serves."""
    if engine_url is None:
        return configured
    return _served_name(configured, engine_url, _model_cards(engine_url))


def served_model_name_for_replicas(configured: str, engine_urls: list[str]) -> str:
    """`served_model_name_for` over every replica (rollout_worker/serving/replicas.py), checked before anything
    starts: each must answer, serve the same model name and the same `max_model_len` (a rollout's context limit must
    not depend on where the router put it); the first bad URL is named in a one-line error. One `/v1/models` request
    per replica gives both."""
    cards = {url: _model_cards(url) for url in engine_urls}
    names = [_served_name(configured, url, cards[url]) for url in engine_urls]
    first_url, served = engine_urls[0], names[0]
    for url, name in zip(engine_urls[1:], names[1:]):
        if name != served:
            raise EngineNotServingError(f"the engine at {url} serves {name!r} but the one at {first_url} serves "
                                        f"{served!r}: every --engine-url must serve the same model")
    lengths = [_max_model_len(cards[url], served) for url in engine_urls]
    for url, length in zip(engine_urls[1:], lengths[1:]):
        if length != lengths[0]:
            raise EngineNotServingError(f"the engine at {url} serves max_model_len {length} but the one at "
                                        f"{first_url} serves {lengths[0]}: start every replica with the same "
                                        "--max-model-len")
    return served


def _model_cards(engine_url: str) -> list[dict]:
    """The engine's `/v1/models` cards, or a one-line error saying it cannot be reached."""
    import requests

    try:
        resp = requests.get(f"{engine_url.rstrip('/')}/v1/models", timeout=30)
        resp.raise_for_status()
        cards = resp.json()["data"]
        if not all(isinstance(card, dict) and "id" in card for card in cards):
            raise KeyError("id")  # every card must name its model
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        raise EngineNotServingError(f"cannot reach the engine at {engine_url} ({type(exc).__name__}): is it running?") from None
    return cards


def _served_name(configured: str, engine_url: str, cards: list[dict]) -> str:
    names = [card["id"] for card in cards]
    if configured in names:
        return configured
    default = next(f.default for f in fields(WorkerConfig) if f.name == "served_model_name")
    if configured == default and len(names) == 1:
        return names[0]
    raise EngineNotServingError(f"the engine at {engine_url} serves {names}, not {configured!r}: pass --served-model-name")


def _max_model_len(cards: list[dict], served: str) -> int | None:
    """The `max_model_len` the card of `served` gives (None when the engine does not say)."""
    value = next(card for card in cards if card["id"] == served).get("max_model_len")
    return value if isinstance(value, int) else None


def _test_executor(sandbox: str):
    """Grading runs in a fresh bubblewrap sandbox on the host for every agent sandbox backend: the grader needs the
    task's pristine `repo_dir` on the host anyway, and a fresh local sandbox has no network and nothing of the
    agent's but its diff."""
    if sandbox not in ("local", "docker"):
        raise ConfigError(f"unknown sandbox backend {sandbox!r}: expected 'local' or 'docker'")
    if sandbox == "docker" and shutil.which("bwrap") is None:  # a Docker host without bubblewrap: a fresh container
        from .environment.sandbox.docker.executor import DockerTestExecutor

        return DockerTestExecutor()
    from .environment.sandbox import LocalSandboxTestExecutor

    return LocalSandboxTestExecutor()


def build_worker(config: WorkerConfig, *, tasks: list[Task], episode_runner, tokenizer, engine_url: str | list[str],
                 gate_host: str = "127.0.0.1", gate_port: int = 0, gate_secret: bytes | None = None,
                 gate_config: GateConfig | None = None, cluster=None, model: str | None = None,
                 episode_parts: tuple | None = None):
    """A `RolloutWorker` with the training template resolved (explicit template > prefix-preserving > TRL's).

    `cluster` (a `rollout_worker.nodes.cluster.ClusterConnection`, for `--cluster`): rollouts run on rollout-node
    actors of that Ray cluster, each building its runner from `episode_parts` (EpisodeOptions, EpisodeConfig,
    GradingConfig, ContainerGradingConfig) and its tokenizer from `model`; `episode_runner` is then unused."""
    from .serving.chat_template import resolve_training_template
    from .worker import RolloutWorker

    template = resolve_training_template(tokenizer, config.chat_template)
    nodes = None
    if cluster is not None:
        if model is None or episode_parts is None:
            raise ValueError("rollout nodes on a cluster need the model and the episode parts to build their own")
        from .nodes.ray_actor import NodeSpec
        from .nodes.ray_nodes import RayNodes

        urls = [engine_url] if isinstance(engine_url, str) else list(engine_url)
        gate = gate_config or GateConfig()
        spec = NodeSpec(config, functools.partial(build_episode_runner, *episode_parts),
                        functools.partial(load_tokenizer, model), template, urls, gate)
        nodes = lambda adapter_prefix: RayNodes(  # noqa: E731
            cluster, dataclasses.replace(spec, adapter_prefix=adapter_prefix))
    return RolloutWorker(config, tasks=tasks, episode_runner=episode_runner, tokenizer=tokenizer,
                         chat_template=template, engine_url=engine_url, gate_host=gate_host, gate_port=gate_port,
                         gate_secret=gate_secret, gate_config=gate_config, nodes=nodes)


def load_tokenizer(model: str):
    """The tokenizer of `model` (a path or hub name); `embedded` is the tiny demo model's real Qwen3 tokenizer."""
    if model.startswith("embedded"):  # every embedded model (local_engine.embedded) has the real Qwen3 tokenizer
        from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer

        return load_qwen3_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)
