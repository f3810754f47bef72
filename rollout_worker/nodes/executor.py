"""What runs one rollout on a host: the gate shard, the turn serving from a pinned engine replica, the episode.

The coordinator (`rollout_worker.worker.RolloutWorker`) keeps groups, policy versions and the trainer's queue; it
hands a rollout (an id and a task) to a node, and the node answers with a `RolloutOutcome`. `RolloutExecutor` is
that node's body: in-process for the default path (`LocalNodes`), inside a Ray actor on another machine for
`--cluster ray` (`rollout_worker/nodes/ray_nodes.py`). Rollout secrets are minted by this executor's gate and never
leave it; the outcome holds tokens, grades and timings only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from control_plane import GateConfig, InterceptionServer

from ..config import WorkerConfig
from ..final_status import decide_outcome
from ..outcomes import EpisodeStatus, TurnEnd
from ..protocols import EpisodeRunner
from ..serving.assembly import PromptAssembler, TrainingRow
from ..serving.engine_client import EngineClient
from ..serving.replicas import NoEngine, NoReplicaLeftError, ReplicaSet
from ..serving.turns import TurnServer, TurnState
from ..types import EpisodeResult, Task

logger = logging.getLogger(__name__)


@dataclass
class RolloutOutcome:
    """What a node returns for one rollout: its final result, training rows and the counters the coordinator
    publishes. Plain data (it crosses a process boundary under `--cluster ray`)."""

    result: EpisodeResult
    rows: list[TrainingRow]
    stats: dict[str, float]
    first_model_version: int | None
    started_at: float
    finished_at: float
    engine_latency_s: list[float] = field(default_factory=list)
    overhead_s: list[float] = field(default_factory=list)
    replica: str | None = None
    node: str | None = None
    ended_by: TurnEnd | None = None


def this_host() -> str:
    return socket.gethostname()


class RolloutExecutor:
    """Runs rollouts on this host. `start` once (gate up, every replica's `max_model_len` read), `run` per rollout
    from the owner's event loop, `stop` once at the end (in-flight rollouts are the caller's to cancel first).

    Args:
        model_version: the policy version to stamp on sampled turns now (the coordinator's, or the last one pushed
            to a remote node).
        engine_urls: the engine replicas; empty for an agent that never calls the model (no engine runs).
        node: the name records carry for where they ran.
    """

    def __init__(self, config: WorkerConfig, *, episode_runner: EpisodeRunner, tokenizer, chat_template: str,
                 engine_urls: Sequence[str], model_version: Callable[[], int],
                 adapter_for_version: Callable[[int], str | None], node: str,
                 gate_host: str = "127.0.0.1", gate_port: int = 0, gate_config: GateConfig | None = None,
                 gate_secret: bytes | None = None):
        self.config = config
        self.episode_runner = episode_runner
        self.tokenizer = tokenizer
        self.assembler = PromptAssembler(tokenizer, chat_template)
        self.engine_urls = list(engine_urls)
        self.model_version = model_version
        self.adapter_for_version = adapter_for_version
        self.node = node
        # gate_secret: what rollout keys are derived from (random when None); a deployment that must reach the gate
        # from outside (a Space) passes its own. Never logged.
        self.gate = InterceptionServer(host=gate_host, port=gate_port, config=gate_config or GateConfig(),
                                       served_model_name=config.served_model_name, secret=gate_secret)
        self.replicas: ReplicaSet | None = None
        self.turns: TurnServer | None = None
        self._clients: list[EngineClient] = []

    async def start(self) -> None:
        await self.gate.start()
        self._clients = [EngineClient(url, self.config.served_model_name, timeout_s=self.config.engine_timeout_s)
                         for url in self.engine_urls]
        # No URL: the agent never calls the model (`calls_model = False`), and no engine was started for it.
        engines = list(zip(self.engine_urls, self._clients, strict=True)) or [("", NoEngine())]
        self.replicas = ReplicaSet(engines)
        max_model_len = await self.replicas.max_model_len()
        # One turn server for all replicas: each rollout passes its pinned replica's engine to `serve`.
        self.turns = TurnServer(config=self.config, engine=engines[0][1], tokenizer=self.tokenizer,
                                max_model_len=max_model_len, model_version=self.model_version,
                                adapter_for_version=self.adapter_for_version)

    async def stop(self) -> None:
        await self.gate.stop()
        for client in self._clients:
            await client.close()

    async def run(self, rollout_id: str, task: Task, state: TurnState,
                  replica_url: str | None = None) -> RolloutOutcome | None:
        """One rollout, from opening it on the gate to its graded, final result. None when no engine replica is up
        (raised by nobody: the caller decides whether to wait for one or end the run). Cancellation is honoured at
        any point: the episode runner cleans up its sandbox and agent. `replica_url`: the replica the coordinator
        chose (`ReplicaSet.acquire`'s `prefer`)."""
        started = time.time()
        stop = asyncio.Event()
        try:
            # pinned for the rollout's whole life: its prefix cache is there
            replica = self.replicas.acquire(replica_url)
        except NoReplicaLeftError:
            return None
        try:
            # how this agent wants a turn the token limit cut (its launcher declares it; the gate config overrides)
            handle = await self.gate.open_rollout(
                rollout_id, report_truncation=getattr(self.episode_runner, "report_truncation", None))
        except BaseException:
            self.replicas.release(replica)
            raise
        conversation = self.assembler.new_conversation()
        server = asyncio.create_task(self.turns.serve(handle, conversation, state, stop,
                                                      engine=self.replicas.engine_for(replica)))
        try:
            try:
                result = await asyncio.wait_for(self.episode_runner.run(task, handle.endpoint, stop),
                                                timeout=self.config.episode_timeout_s)
            except asyncio.TimeoutError:
                result = EpisodeResult(status=EpisodeStatus.CANCELLED, reward=None, scorable=False,
                                       details={"error": f"episode exceeded {self.config.episode_timeout_s} s"})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - an infrastructure failure is unscorable, never reward 0
                logger.exception("episode %s failed", rollout_id)
                result = EpisodeResult(status=EpisodeStatus.INFRA_ERROR, reward=None, scorable=False,
                                       details={"error": f"{type(exc).__name__}: {exc}"})
        finally:
            await handle.close()
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)
            self.replicas.release(replica)
        return RolloutOutcome(
            result=decide_outcome(result, state.ended_by, self.config.overlong_policy, state.engine_error),
            rows=conversation.rows(),
            stats={**conversation.stats, "parse_failures": state.parse_failures,
                   "discarded_replies": state.discarded_replies},
            first_model_version=state.first_model_version, started_at=started, finished_at=time.time(),
            engine_latency_s=list(state.engine_latency_s), overhead_s=list(state.overhead_s),
            replica=replica.url or None, node=self.node, ended_by=state.ended_by,
        )
