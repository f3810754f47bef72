"""Several engine replicas behind one worker: which replica a rollout talks to, and what happens when one goes.

Routing rule: a rollout is pinned to one replica for its whole life (every turn re-sends the whole context, so only
the replica that served the previous turn has it in its prefix cache), and a new rollout goes to the replica with the
fewest rollouts in flight (ties: the first in `--engine-url` order). Rollouts, not calls, are the unit of load: a
rollout's calls come one after another, so rollouts in flight bound the calls a replica serves at once.

Failure rule: a replica whose transport fails on every retry (`EngineUnreachableError`: connection refused or
dropped) is taken out of rotation, with one warning naming it. Its rollouts end at their next call with that error
(the turn server makes it an engine error: infrastructure, unscorable) and new rollouts go to the others. While
another replica is up, a dropped one stays out (a server that flaps would keep failing rollouts). Once none is up, the
worker waits up to `WorkerConfig.engine_down_grace_s` for one to answer `/health` again and puts it back: a lone
engine gone for seconds (a restart, a network blip; tests/reliability/test_faults.py's `engine_away`) must not end the
run. After the grace, `acquire` raises `NoReplicaLeftError` and the run ends.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from intercept_common.errors import UserError

from ..protocols import Engine, EngineError, EngineUnreachableError
from ..types import Completion

logger = logging.getLogger(__name__)


_PROBE_EVERY_S = 1.0


class ReplicaEngine(Engine, Protocol):
    """An `Engine` that can also say whether its server answers at all (`EngineClient`)."""

    async def healthy(self) -> bool: ...


class NoEngine:
    """The engine of a run whose agent never calls the model (its launcher's `calls_model = False`: the oracle,
    noop), for which no engine is started. A call means that declaration is wrong: it fails as an engine error."""

    async def complete(self, prompt_ids: list[int], **kwargs) -> Completion:
        raise EngineError("the agent called the model, but this run started no engine: its launcher declares "
                          "calls_model = False")

    async def max_model_len(self) -> int:
        return 1 << 30  # no context limit applies: nothing is ever sampled

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        pass


class ReplicaState(enum.StrEnum):
    UP = "up"
    DOWN = "down"  # out of rotation for the rest of the run


class NoReplicaLeftError(RuntimeError, UserError):
    """Every engine replica stopped answering; the run cannot go on."""


@dataclass
class Replica:
    """One engine server and what the router knows of it."""

    url: str
    engine: ReplicaEngine
    state: ReplicaState = ReplicaState.UP
    in_flight: int = 0  # rollouts pinned to it now
    rollouts: int = 0  # rollouts ever pinned to it
    calls: int = 0  # completion calls sent to it
    down_reason: str = ""


class ReplicaSet:
    """The replicas of one run, in `--engine-url` order. Used from the worker's one event loop only (no locks)."""

    def __init__(self, replicas: list[tuple[str, ReplicaEngine]]):
        if not replicas:
            raise ValueError("a ReplicaSet needs at least one replica")
        self.replicas = [Replica(url, engine) for url, engine in replicas]

    @property
    def up(self) -> list[Replica]:
        return [r for r in self.replicas if r.state is ReplicaState.UP]

    def acquire(self, prefer: str | None = None) -> Replica:
        """Pin a new rollout to the least-loaded replica still up; `release` it when it ends. Ties go to the replica
        that was given fewest rollouts so far, then by order: rollouts that run one after another (a single slot, or
        a step's last stragglers) alternate over the replicas instead of all landing on the first. `prefer`: the URL a
        cluster's coordinator chose by its count over every node; taken while that replica is up here."""
        live = self.up
        if not live:
            raise NoReplicaLeftError("every engine replica stopped answering: "
                                     + "; ".join(f"{r.url} ({r.down_reason})" for r in self.replicas))
        chosen = [r for r in live if prefer and r.url == prefer]  # a cluster's coordinator routes over all nodes
        replica = chosen[0] if chosen else min(live, key=lambda r: (r.in_flight, r.rollouts))  # first of equals
        replica.in_flight += 1
        replica.rollouts += 1
        return replica

    def release(self, replica: Replica) -> None:
        replica.in_flight = max(0, replica.in_flight - 1)

    def mark_down(self, replica: Replica, reason: str) -> None:
        """Take `replica` out of rotation; warns once (every rollout pinned to it would otherwise repeat it)."""
        if replica.state is ReplicaState.DOWN:
            return
        replica.state, replica.down_reason = ReplicaState.DOWN, reason
        logger.warning("engine replica %s stopped answering and is out of rotation (%d left): %s", replica.url,
                       len(self.up), reason[:300])

    async def wait_for_one_back(self, grace_s: float, stop: asyncio.Event) -> bool:
        """With none up: probe the dropped replicas' `/health` every second for up to `grace_s`; put the first that
        answers back into rotation (True). False when none came back in time or `stop` was set."""
        deadline = time.monotonic() + grace_s
        while not stop.is_set():
            for replica in self.replicas:
                if await replica.engine.healthy():
                    replica.state, replica.down_reason = ReplicaState.UP, ""
                    logger.warning("engine replica %s answers again and is back in rotation", replica.url)
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(stop.wait(), timeout=min(_PROBE_EVERY_S, left))
            except asyncio.TimeoutError:
                pass
        return False

    async def max_model_len(self) -> int:
        """The replicas' one context length. They must agree: with different ones, whether a long rollout ends
        overlong (unscorable, or reward 0 under `overlong_policy zero`) would depend on where the router put it,
        noise in the reward the policy cannot explain. The CLI checks this before starting; this guards direct use."""
        lengths = [await r.engine.max_model_len() for r in self.replicas]
        if len(set(lengths)) > 1:
            listed = ", ".join(f"{r.url}: {n}" for r, n in zip(self.replicas, lengths, strict=True))
            raise ValueError(f"the engine replicas serve different max_model_len ({listed}); start them alike")
        return lengths[0]

    def engine_for(self, replica: Replica) -> PinnedEngine:
        """The `Engine` a rollout pinned to `replica` samples from."""
        return PinnedEngine(self, replica)

    def stats(self) -> dict[str, dict[str, int | str]]:
        return {r.url: {"state": r.state.value, "rollouts": r.rollouts, "calls": r.calls} for r in self.replicas}


class PinnedEngine:
    """One replica as an `Engine`: counts its calls, and reports the replica down when its transport fails."""

    def __init__(self, replicas: ReplicaSet, replica: Replica):
        self._set, self.replica = replicas, replica

    async def complete(self, prompt_ids: list[int], **kwargs) -> Completion:
        # Sent even when the replica is out of rotation: a rollout pinned to it stays there (its context is cached
        # there), and if the server is back the rollout lives on; if not, the client's retries end it in seconds.
        replica = self.replica
        replica.calls += 1
        try:
            return await replica.engine.complete(prompt_ids, **kwargs)
        except EngineUnreachableError as exc:
            self._set.mark_down(replica, str(exc))
            raise

    async def max_model_len(self) -> int:
        return await self.replica.engine.max_model_len()
