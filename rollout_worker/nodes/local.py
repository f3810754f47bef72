"""The default rollout node: the coordinator's own process runs every rollout (no Ray, nothing to place)."""

from __future__ import annotations

import asyncio

from ..serving.turns import TurnState
from ..types import Task
from .executor import RolloutExecutor, RolloutOutcome


class LocalNodes:
    """`RolloutNodes` of one in-process executor; the coordinator's `max_inflight` is its only bound. Engine
    replicas that all stopped answering are waited for (`--engine-down-grace-s`) before the run ends."""

    def __init__(self, executor: RolloutExecutor):
        self.executor = executor

    async def start(self) -> None:
        await self.executor.start()

    def has_room(self) -> bool:
        return True  # the coordinator's max_inflight is the bound

    def claim(self) -> None:
        pass

    @property
    def usable(self) -> bool:
        return bool(self.executor.replicas.up)

    async def run(self, rollout_id: str, task: Task, state: TurnState) -> RolloutOutcome | None:
        return await self.executor.run(rollout_id, task, state)

    async def wait_usable(self, grace_s: float, stop: asyncio.Event) -> bool:
        return await self.executor.replicas.wait_for_one_back(grace_s, stop)

    def raise_unusable(self) -> None:
        self.executor.replicas.acquire()  # raises NoReplicaLeftError, naming every replica and why it went

    def set_model_version(self, version: int) -> None:
        pass  # the executor reads the coordinator's version directly

    async def stop(self) -> None:
        await self.executor.stop()

    @property
    def replicas(self):
        return self.executor.replicas
