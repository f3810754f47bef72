"""The rollout node that runs inside a Ray actor on a cluster machine (`--cluster ray`, docs/scale.md).

It builds its own parts from a `NodeSpec` — the agent and sandbox backend of its host, the grader, the tokenizer, the
engine replicas and a gate shard with a secret of its own — and runs the rollouts the coordinator assigns. Only
`RolloutOutcome`s go back: no rollout secret leaves this process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from control_plane import GateConfig

from ..config import WorkerConfig
from ..protocols import EpisodeRunner
from ..serving.turns import TurnState
from ..types import Task
from .executor import RolloutExecutor, RolloutOutcome, this_host


@dataclass
class NodeSpec:
    """Everything a node needs to build its parts, pickled to it: the worker config, builders of the episode runner
    and the tokenizer (module functions over the parsed configs: `functools.partial(build_episode_runner, ...)`,
    called on the node, so the sandbox backend and the model files are the node's own) and the resolved chat
    template."""

    config: WorkerConfig
    episode_runner: Callable[[], EpisodeRunner]
    tokenizer: Callable[[], Any]  # the same model path or hub name must resolve on every machine
    chat_template: str
    engine_urls: Sequence[str]
    gate_config: GateConfig
    adapter_prefix: str | None = None


class RolloutNodeActor:
    """Wrapped by `ray.remote` (`RayNodes`); an async actor, so its rollouts run concurrently on its loop.
    `start` once, `run` per rollout, `set_model_version` on every policy update, `stop` once."""

    def __init__(self, spec: NodeSpec, name: str):
        self.spec, self.name = spec, name
        self._version = 0
        self.executor: RolloutExecutor | None = None

    async def start(self) -> dict[str, Any]:
        spec = self.spec
        prefix = spec.adapter_prefix
        self.executor = RolloutExecutor(
            spec.config, episode_runner=spec.episode_runner(), tokenizer=spec.tokenizer(),
            chat_template=spec.chat_template, engine_urls=spec.engine_urls, model_version=lambda: self._version,
            adapter_for_version=lambda v: f"{prefix}-v{v}" if prefix and v > 0 else None, node=self.name,
            gate_config=spec.gate_config)
        await self.executor.start()
        return {"pid": os.getpid(), "host": this_host()}

    async def run(self, rollout_id: str, task: Task, replica_url: str | None = None) -> RolloutOutcome | None:
        return await self.executor.run(rollout_id, task, TurnState(), replica_url)

    def set_model_version(self, version: int) -> None:
        self._version = int(version)

    async def engines_up(self) -> bool:
        return bool(self.executor.replicas.up)

    async def stop(self) -> None:
        if self.executor is not None:
            await self.executor.stop()
