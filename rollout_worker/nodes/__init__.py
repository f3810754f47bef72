"""Where rollouts run: rollout nodes, each a gate shard with the turn serving and the sandbox backend of its host.

The coordinator (`RolloutWorker`) launches rollouts through one `RolloutNodes`: `LocalNodes` runs them in its own
process (the default), `RayNodes` on rollout-node actors placed on a Ray cluster's machines (`--cluster ray`,
docs/scale.md). Ray is imported only by the latter.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from ..serving.turns import TurnState
from ..types import Task
from .executor import RolloutExecutor, RolloutOutcome

# How long a rollout node may take to start (import the stack, load the tokenizer, read the engines' context length):
# tens of seconds on a loaded 2-core box, and several nodes start at once.
NODE_START_TIMEOUT_S = 300.0


class RolloutNodes(Protocol):
    """The coordinator's view of the nodes. Every method but `set_model_version` is called on the worker's loop.

    `start` once before the first rollout; `has_room` before each launch and `claim` right after it (the launched
    rollout's `run` has not begun yet, so the room it will take is reserved); `run` once per rollout (its result is
    None when nothing could run it: no engine replica or node left, which `usable` then reports); `wait_usable` and
    `raise_unusable` when `usable` is False and nothing is in flight; `stop` once at the end, after in-flight
    rollouts were cancelled. `set_model_version` is called from the trainer's thread on every policy update.
    """

    async def start(self) -> None: ...

    def has_room(self) -> bool: ...

    def claim(self) -> None: ...

    @property
    def usable(self) -> bool: ...

    async def run(self, rollout_id: str, task: Task, state: TurnState) -> RolloutOutcome | None: ...

    async def wait_usable(self, grace_s: float, stop: asyncio.Event) -> bool: ...

    def raise_unusable(self) -> None: ...

    def set_model_version(self, version: int) -> None: ...

    async def stop(self) -> None: ...


__all__ = ["NODE_START_TIMEOUT_S", "RolloutExecutor", "RolloutNodes", "RolloutOutcome"]
