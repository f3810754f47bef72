"""`--cluster ray`: rollout nodes as Ray actors, one per machine that advertises sandbox slots (docs/scale.md).

Placement: each machine started with `--resources '{"sandbox_slots": N}'` gets one `RolloutNodeActor`, pinned to it
(node affinity) and holding its N slots, so a machine runs at most N rollouts at once. New rollouts go to the node
with the most free slots. A machine that joins gets a node within a couple of seconds; a node that dies ends its
rollouts as `infra_error` (unscorable, like any infrastructure failure) with one warning, and the run goes on with
the others.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass, field

from ..outcomes import EpisodeStatus
from ..serving.replicas import NoEngine, NoReplicaLeftError, ReplicaSet
from ..serving.turns import TurnState
from ..types import EpisodeResult, Task
from . import NODE_START_TIMEOUT_S
from .cluster import SLOT_RESOURCE, ClusterConnection
from .executor import RolloutOutcome
from .ray_actor import NodeSpec, RolloutNodeActor

logger = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 30.0
_REFRESH_EVERY_S = 2.0
_LIVENESS_TICK_S = 5.0


class NoNodeLeftError(NoReplicaLeftError):
    """Nothing is left to run rollouts on: every rollout node died, or every node's engine replicas stopped."""


class NodeState(enum.StrEnum):
    STARTING = "starting"
    UP = "up"
    ENGINES_DOWN = "engines_down"  # its engine replicas stopped answering: no new rollouts until one is back
    GONE = "gone"


@dataclass
class _Node:
    name: str
    ray_node_id: str
    capacity: int
    handle: object
    state: NodeState = NodeState.STARTING
    in_flight: int = 0
    rollouts: int = 0
    reason: str = ""
    info: dict = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.capacity - self.in_flight if self.state is NodeState.UP else 0


class RayNodes:
    """`RolloutNodes` on a Ray cluster (`rollout_worker.nodes.RolloutNodes` says when each method is called)."""

    def __init__(self, connection: ClusterConnection, spec: NodeSpec):
        self.connection = connection
        self.spec = spec
        self.nodes: dict[str, _Node] = {}  # by Ray node id, in the order they joined
        self._claimed = 0
        self._version = 0
        self._last_refresh = 0.0
        self._starts: set[asyncio.Task] = set()
        self._room = asyncio.Event()
        # Replica routing over the whole cluster, by the same rule as one process's (a node's own count sees only its
        # rollouts, so every node's first rollout would go to the same replica). Counting only: nodes call the engines.
        self._routing = ReplicaSet([(url, NoEngine()) for url in spec.engine_urls]) if spec.engine_urls else None

    # -- placement ---------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._refresh(force=True)
        if self._starts:
            await asyncio.wait(set(self._starts), timeout=NODE_START_TIMEOUT_S + 5)
        if not any(n.state is NodeState.UP for n in self.nodes.values()):
            reasons = "; ".join(f"{n.name}: {n.reason}" for n in self.nodes.values()) or "no machine offers slots"
            raise NoNodeLeftError(f"no rollout node started on the Ray cluster at {self.connection.address}: "
                                  f"{reasons}")

    def _refresh(self, force: bool = False) -> None:
        """Start a node on every machine that newly offers slots; note the ones Ray reports dead."""
        now = time.monotonic()
        if not force and now - self._last_refresh < _REFRESH_EVERY_S:
            return
        self._last_refresh = now
        import ray

        alive = {}
        for entry in ray.nodes():
            if entry.get("Alive"):
                alive[entry["NodeID"]] = entry
            elif (node := self.nodes.get(entry["NodeID"])) is not None and node.state is not NodeState.GONE:
                self._gone(node, "its machine left the Ray cluster")
        for node_id, entry in alive.items():
            slots = int(entry["Resources"].get(SLOT_RESOURCE, 0))
            if slots >= 1 and node_id not in self.nodes:
                self._launch(node_id, entry.get("NodeManagerHostname") or entry.get("NodeManagerAddress", "?"), slots)

    def _launch(self, node_id: str, host: str, slots: int) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        name = f"{host}/{node_id[:8]}"
        actor_class = ray.remote(RolloutNodeActor)
        handle = actor_class.options(
            num_cpus=0, resources={SLOT_RESOURCE: slots}, max_restarts=0, max_task_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(self.spec, name)
        node = self.nodes[node_id] = _Node(name=name, ray_node_id=node_id, capacity=slots, handle=handle)
        task = asyncio.get_running_loop().create_task(self._await_start(node))
        self._starts.add(task)
        task.add_done_callback(self._starts.discard)

    async def _await_start(self, node: _Node) -> None:
        try:
            node.info = await asyncio.wait_for(_awaitable(node.handle.start.remote()), NODE_START_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a node that cannot start is left out, with its reason
            self._gone(node, f"did not start ({_why(exc)})")
            self._kill(node)
            return
        if node.state is NodeState.STARTING:
            node.handle.set_model_version.remote(self._version)
            node.state = NodeState.UP
            logger.info("rollout node %s is up with %d sandbox slots", node.name, node.capacity)
            self._room.set()

    def _gone(self, node: _Node, reason: str) -> None:
        if node.state is not NodeState.GONE:
            up = sum(n.state is NodeState.UP for n in self.nodes.values() if n is not node)
            if node.state is not NodeState.STARTING or reason.startswith("did not start"):
                logger.warning("rollout node %s %s; it is out of rotation (%d left)", node.name, reason, up)
            node.state, node.reason = NodeState.GONE, reason

    # -- RolloutNodes --------------------------------------------------------------------------------------------------

    def has_room(self) -> bool:
        self._refresh()
        return sum(n.free for n in self.nodes.values()) > self._claimed

    def claim(self) -> None:
        self._claimed += 1

    @property
    def usable(self) -> bool:
        self._refresh()
        return any(n.state in (NodeState.UP, NodeState.STARTING) for n in self.nodes.values())

    async def run(self, rollout_id: str, task: Task, state: TurnState) -> RolloutOutcome | None:
        self._claimed = max(0, self._claimed - 1)
        node = await self._acquire()
        if node is None:
            return None
        started = time.time()
        replica = self._routing.acquire() if self._routing is not None else None
        ref = node.handle.run.remote(rollout_id, task, replica.url if replica is not None else None)
        future = _awaitable(ref)
        try:
            while True:  # the coordinator's staleness check sees a remote rollout as active while its node lives
                done, _ = await asyncio.wait({future}, timeout=_LIVENESS_TICK_S)
                state.last_activity = time.monotonic()
                if done:
                    break
            outcome = future.result()
        except asyncio.CancelledError:
            import ray

            ray.cancel(ref)  # the node's runner cleans up the sandbox and agent on cancellation
            await asyncio.wait({future}, timeout=_STOP_TIMEOUT_S)
            raise
        except Exception as exc:  # noqa: BLE001 - the node died, or its rollout raised: unscorable, never reward 0
            return self._failed(node, rollout_id, exc, started)
        finally:
            node.in_flight -= 1
            if replica is not None:
                self._routing.release(replica)
            self._room.set()
        if outcome is None:  # this node's engine replicas all stopped answering
            if node.state is NodeState.UP:
                node.state, node.reason = NodeState.ENGINES_DOWN, "its engine replicas stopped answering"
                logger.warning("rollout node %s: %s", node.name, node.reason)
            return None
        node.rollouts += 1
        return outcome

    async def _acquire(self) -> _Node | None:
        while True:
            free = [n for n in self.nodes.values() if n.free > 0]
            if free:
                node = max(free, key=lambda n: (n.free, -n.rollouts))
                node.in_flight += 1
                return node
            if not self.usable:
                return None
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), timeout=_REFRESH_EVERY_S)
            except asyncio.TimeoutError:
                pass

    def _failed(self, node: _Node, rollout_id: str, exc: BaseException, started: float) -> RolloutOutcome:
        import ray

        if isinstance(exc, ray.exceptions.RayActorError):
            self._gone(node, f"died ({_why(exc)})")
            error = f"rollout node {node.name} died mid-rollout"
        else:
            logger.error("rollout %s failed on node %s: %s", rollout_id, node.name, _why(exc))
            error = f"rollout node {node.name}: {_why(exc)}"
        return RolloutOutcome(result=EpisodeResult(status=EpisodeStatus.INFRA_ERROR, reward=None, scorable=False,
                                                   details={"error": error}),
                              rows=[], stats={}, first_model_version=None, started_at=started,
                              finished_at=time.time(), node=node.name)

    async def wait_usable(self, grace_s: float, stop: asyncio.Event) -> bool:
        deadline = time.monotonic() + grace_s
        while not stop.is_set() and time.monotonic() < deadline:
            for node in [n for n in self.nodes.values() if n.state is NodeState.ENGINES_DOWN]:
                try:
                    if await asyncio.wait_for(_awaitable(node.handle.engines_up.remote()), timeout=10):
                        node.state, node.reason = NodeState.UP, ""
                        logger.warning("rollout node %s: an engine replica answers again", node.name)
                except Exception as exc:  # noqa: BLE001
                    self._gone(node, f"died ({_why(exc)})")
            self._refresh(force=True)
            if self.usable:
                return True
            await asyncio.sleep(1.0)
        return self.usable

    def raise_unusable(self) -> None:
        reasons = "; ".join(f"{n.name} {n.reason}" for n in self.nodes.values())
        raise NoNodeLeftError(f"no rollout node can run rollouts: {reasons}")

    def set_model_version(self, version: int) -> None:
        self._version = int(version)
        for node in list(self.nodes.values()):
            if node.state is not NodeState.GONE:
                node.handle.set_model_version.remote(self._version)

    async def stop(self) -> None:
        for task in list(self._starts):
            task.cancel()
        live = [n for n in self.nodes.values() if n.state is not NodeState.GONE]
        if live:
            await asyncio.wait([_awaitable(n.handle.stop.remote()) for n in live], timeout=_STOP_TIMEOUT_S)
        for node in self.nodes.values():
            self._kill(node)

    def _kill(self, node: _Node) -> None:
        import ray

        try:
            ray.kill(node.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def stats(self) -> dict[str, dict]:
        """Per node: state, slots and rollouts run (for logs and tests)."""
        return {n.name: {"state": str(n.state), "slots": n.capacity, "rollouts": n.rollouts, "reason": n.reason,
                         **n.info} for n in self.nodes.values()}


def _awaitable(ref) -> asyncio.Future:
    """A Ray ObjectRef as a future of the running loop (Ray resolves it on its own thread)."""
    return asyncio.wrap_future(ref.future())


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
