"""The rollout worker: runs agent episodes through the gate and feeds TRL's AsyncGRPOTrainer.

It implements TRL 1.16's `RolloutWorkerProtocol`. Everything asynchronous (the gate, the engine client, the
episodes) lives on one event loop in a background thread, so the trainer's thread is never blocked; the two sides
meet only at thread-safe queues (`rollout_buffer`, `metrics_queue`, `trajectories`) and an integer model version.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from control_plane import GateConfig

from .config import WorkerConfig
from .groups import GroupScheduler, Slot, group_advantages
from .nodes import NODE_START_TIMEOUT_S, RolloutExecutor, RolloutNodes
from .nodes.local import LocalNodes
from .outcomes import EpisodeStatus, TurnEnd
from .protocols import EpisodeRunner
from .run_ahead import RunAheadBound, TrainerFeed
from .serving.replicas import NoReplicaLeftError
from .serving.turns import TurnState
from .trajectory import Trajectory, build_samples, sample_type, turn_tokens
from .types import Task

logger = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 60.0


class WorkerCrashed(RuntimeError):
    """The worker's loop died; the trainer must not wait for samples that will never come."""


class RolloutWorker:
    """Produces `RolloutSample`s from real agent episodes (TRL's `RolloutWorkerProtocol`).

    Args:
        config: worker knobs (groups, sampling, budgets).
        tasks: the tasks to run, in any order (the worker shuffles them with `config.seed`).
        episode_runner: runs one agent episode against a rollout endpoint and grades it.
        tokenizer: the policy's tokenizer.
        chat_template: the prefix-preserving training template prompts are rendered with.
        engine_url: base URL of vLLM or the local engine (`/v1/completions` is appended), or several: replicas
            serving the same model; each rollout is pinned to one (rollout_worker/serving/replicas.py). Empty: the
            agent never calls the model (`calls_model = False`) and no engine runs.
        gate_host, gate_port, gate_config: where the interception gate listens (port 0: any free port).
        nodes: where rollouts run, built on the worker's loop from the adapter prefix (`sample_from_adapters`) by
            this callable (`rollout_worker/nodes/`); None: in this process, by `episode_runner` through one gate
            (the default). `--cluster ray` passes one making `RayNodes`: rollout-node actors, each with its own
            gate, runner and replicas.
    """

    def __init__(
        self,
        config: WorkerConfig,
        *,
        tasks: list[Task],
        episode_runner: EpisodeRunner,
        tokenizer,
        chat_template: str,
        engine_url: str | Sequence[str],
        gate_host: str = "127.0.0.1",
        gate_port: int = 0,
        gate_config: GateConfig | None = None,
        gate_secret: bytes | None = None,
        nodes: Callable[[str | None], RolloutNodes] | None = None,
    ):
        self.config = config
        self.tasks = tasks
        self.episode_runner = episode_runner
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.engine_urls = [engine_url] if isinstance(engine_url, str) else list(engine_url)
        self.engine_url = self.engine_urls[0] if self.engine_urls else None
        self._gate_args = dict(gate_host=gate_host, gate_port=gate_port, gate_config=gate_config or GateConfig(),
                               gate_secret=gate_secret)
        self._nodes_factory = nodes
        self.nodes: RolloutNodes | None = None  # set on the loop
        self.scheduler: GroupScheduler[Trajectory] = GroupScheduler(
            tasks, config.num_generations, seed=config.seed, max_groups=config.max_groups
        )
        # TRL reads `rollout_buffer` once in its __init__: both queues must exist before start().
        self.metrics_queue: queue.Queue = queue.Queue(maxsize=4096)
        self.rollout_buffer = TrainerFeed(config.queue_maxsize, lambda: self._model_version, config.max_staleness,
                                          self._put_metrics)
        self.run_ahead = (RunAheadBound(config.max_staleness, config.samples_per_version)
                          if config.bound_run_ahead and config.samples_per_version and config.max_staleness is not None
                          else None)
        self._taken_at_version = 0  # rollout_buffer.taken_fresh when the current policy version began
        self.trajectories: queue.Queue = queue.Queue()  # records, when config.keep_trajectories
        self.finished = threading.Event()  # set once max_groups groups are complete (or the loop ended)
        self._model_version = 0
        self._adapter_prefix: str | None = None  # see sample_from_adapters
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._crash: BaseException | None = None
        self._ready = threading.Event()
        self._last_progress = time.monotonic()
        self._started_at = 0.0
        self._inflight: dict[str, tuple[asyncio.Task, TurnState]] = {}
        self._backlog: collections.deque = collections.deque()
        self.counters = {"rollouts": 0, "groups": 0, "samples": 0, "zero_variance_groups": 0,
                         "no_scorable_groups": 0, "dropped_metrics": 0}

    # -- RolloutWorkerProtocol -------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("worker already started")
        sample_type()  # its import, here rather than on the loop (stalled every turn in flight for ~1 s at group 1)
        self._started_at = self._last_progress = time.monotonic()
        self._thread = threading.Thread(target=self._thread_main, name="rollout-worker", daemon=True)
        self._thread.start()
        # Rollout nodes on a cluster each import the stack and load the tokenizer before they answer (RayNodes
        # bounds that itself, and says which node did not start).
        ready_timeout_s = 120.0 if self._nodes_factory is None else 120.0 + NODE_START_TIMEOUT_S
        if not self._ready.wait(timeout=ready_timeout_s):
            raise WorkerCrashed(f"rollout worker did not come up within {ready_timeout_s:.0f} s")
        if isinstance(self._crash, NoReplicaLeftError):  # no engine or rollout node to start on: the user's one line
            raise self._crash
        if self._crash is not None:
            raise WorkerCrashed(f"rollout worker failed to start: {self._crash!r}") from self._crash

    def stop(self) -> None:
        """Cancel in-flight rollouts (their runners clean up sandboxes and agents), close the gate, join."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if thread.is_alive() and self._stop_requested is not None:
            try:
                loop.call_soon_threadsafe(self._stop_requested.set)
            except RuntimeError:  # the loop already finished on its own (max_groups reached)
                pass
        thread.join(timeout=_STOP_TIMEOUT_S)
        if thread.is_alive():
            logger.error("rollout worker did not stop within %.0f s", _STOP_TIMEOUT_S)

    def update_model_version(self, model_version: int) -> None:
        self._taken_at_version = self.rollout_buffer.taken_fresh
        self._model_version = int(model_version)
        if self.nodes is not None:
            self.nodes.set_model_version(self._model_version)  # remote nodes stamp turns with the version pushed
        loop, wakeup = self._loop, getattr(self, "_wakeup", None)
        if self.run_ahead is not None and loop is not None and wakeup is not None:
            try:  # a new version frees run-ahead room: launch now, not at the next 1 s poll
                loop.call_soon_threadsafe(wakeup.set)
            except RuntimeError:  # the loop already ended
                pass

    def sample_from_adapters(self, prefix: str) -> None:
        """From now on, sample policy version N from the engine's LoRA adapter `{prefix}-v{N}` (version 0: the base
        model, which an untrained adapter equals). Called before `start` when the trainer syncs by publishing
        adapters (TRL's adapter sync: the engine keeps serving the base weights, so asking for the served model
        would sample the untrained policy forever)."""
        self._adapter_prefix = prefix

    def _adapter_for_version(self, version: int) -> str | None:
        prefix = self._adapter_prefix
        return f"{prefix}-v{version}" if prefix and version > 0 else None

    def check_health(self, stale_after_s: float) -> None:
        if isinstance(self._crash, NoReplicaLeftError):  # the user's to fix (their engines), as its own one line
            raise self._crash
        if self._crash is not None:
            raise WorkerCrashed(f"rollout worker crashed: {self._crash!r}") from self._crash
        if self._thread is not None and not self._thread.is_alive() and not self.finished.is_set():
            raise WorkerCrashed("rollout worker thread exited")
        idle = time.monotonic() - self._last_progress
        if self._inflight_activity_within(stale_after_s):
            return
        if idle > stale_after_s and not self.finished.is_set():
            raise WorkerCrashed(f"no rollout progress for {idle:.0f} s (stale_after_s={stale_after_s})")

    def _inflight_activity_within(self, seconds: float) -> bool:
        now = time.monotonic()
        return any(now - state.last_activity < seconds for _, state in list(self._inflight.values()))

    # -- resume ----------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict(), "counters": dict(self.counters)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._thread is not None:
            raise RuntimeError("load worker state before start()")
        self.scheduler.load_state_dict(state["scheduler"])
        self.counters.update(state.get("counters", {}))

    # -- the loop --------------------------------------------------------------------------------------------------

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except NoReplicaLeftError as exc:  # the engines' failure, each already warned about: no traceback
            self._crash = exc
            logger.error("%s", exc)
        except BaseException as exc:  # noqa: BLE001 - surfaced through check_health / start
            self._crash = exc
            logger.exception("rollout worker crashed")
        finally:
            self._ready.set()
            self.finished.set()
            loop.close()

    async def _main(self) -> None:
        self._stop_requested = asyncio.Event()
        self._wakeup = asyncio.Event()
        self.nodes = (self._nodes_factory(self._adapter_prefix) if self._nodes_factory is not None
                      else LocalNodes(self._local_executor()))
        try:
            await self.nodes.start()
            self.nodes.set_model_version(self._model_version)
            self._ready.set()
            await self._schedule()
        finally:
            await self._cancel_inflight()
            await self.nodes.stop()

    def _local_executor(self) -> RolloutExecutor:
        return RolloutExecutor(self.config, episode_runner=self.episode_runner, tokenizer=self.tokenizer,
                               chat_template=self.chat_template, engine_urls=self.engine_urls,
                               model_version=lambda: self._model_version,
                               adapter_for_version=self._adapter_for_version, node="local", **self._gate_args)

    @property
    def replicas(self):
        """The in-process node's engine replicas (None before the loop started them, or under `--cluster`)."""
        return getattr(self.nodes, "replicas", None)

    @property
    def gate(self):
        """The in-process node's gate (None before the loop started it, or under `--cluster`)."""
        executor = getattr(self.nodes, "executor", None)
        return executor.gate if executor is not None else None

    async def _schedule(self) -> None:
        cfg = self.config
        while not self._stop_requested.is_set():
            self._flush_backlog()
            if not self.nodes.usable:
                # New rollouts wait; once what ran on the dropped replicas (or nodes) is filed, give one a grace to
                # come back.
                if not self._inflight and not await self.nodes.wait_usable(cfg.engine_down_grace_s,
                                                                           self._stop_requested):
                    if self._stop_requested.is_set():
                        return
                    self.nodes.raise_unusable()  # one line naming every replica (or node) and why it went
                if not self.nodes.usable:
                    await self._wait_for_wakeup()
                continue
            while (len(self._inflight) < cfg.max_inflight and self.nodes.has_room() and not self._buffer_full()
                   and self._run_ahead_allows()
                   and (slot := self.scheduler.next_slot()) is not None):
                rollout_id = f"g{slot.group_id}-{slot.index}-{uuid.uuid4().hex[:8]}"
                state = TurnState()
                self.nodes.claim()
                task = asyncio.create_task(self._run_rollout(rollout_id, slot, state), name=rollout_id)
                self._inflight[rollout_id] = (task, state)
            if not self._inflight and not self._backlog and self.scheduler.exhausted:
                self.finished.set()
                return
            await self._wait_for_wakeup()

    async def _wait_for_wakeup(self) -> None:
        """Until a rollout ends, a new version frees run-ahead room, stop is asked, or 1 s passes."""
        self._wakeup.clear()
        stop_wait = asyncio.ensure_future(self._stop_requested.wait())
        wake_wait = asyncio.ensure_future(self._wakeup.wait())
        await asyncio.wait({stop_wait, wake_wait}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel(), wake_wait.cancel()

    def _flush_backlog(self) -> None:
        # Never block the event loop on a full queue: what does not fit waits here, in order, and nothing is lost.
        while self._backlog:
            try:
                self.rollout_buffer.put_nowait(self._backlog[0])
            except queue.Full:
                return
            self._backlog.popleft()

    def _run_ahead_allows(self) -> bool:
        """Bounded run-ahead (rollout_worker/run_ahead.py): launch only what can be trained within max_staleness."""
        if self.run_ahead is None:
            return True
        if self.counters["groups"] == 0 and self.scheduler.groups_started and not self.scheduler.group_partly_launched:
            return False  # samples per rollout unknown until a group completes: one group first
        per_rollout = max(1.0, self.counters["samples"] / max(1, self.counters["groups"] * self.config.num_generations))
        in_flight = len(self._inflight) + self.scheduler.held_results
        pending = len(self._backlog) + self.rollout_buffer.qsize() + per_rollout * in_flight
        taken = self.rollout_buffer.taken_fresh - self._taken_at_version
        return self.run_ahead.admits(pending, taken, self.scheduler.group_partly_launched, per_rollout, in_flight)

    def _buffer_full(self) -> bool:
        limit = self.config.max_queued_samples or self.config.queue_maxsize // 2
        return bool(self._backlog) or self.rollout_buffer.qsize() >= limit

    async def _cancel_inflight(self) -> None:
        tasks = [t for t, _ in self._inflight.values()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_STOP_TIMEOUT_S / 2)

    async def _run_rollout(self, rollout_id: str, slot: Slot, state: TurnState) -> None:
        try:
            outcome = await self.nodes.run(rollout_id, slot.task, state)
        finally:
            self._inflight.pop(rollout_id, None)
            self._wakeup.set()
        if outcome is None:  # no replica (or node) left after this launch: `_schedule` waits or ends the run
            return
        traj = Trajectory(
            rollout_id=rollout_id, slot=slot, result=outcome.result, rows=outcome.rows, stats=outcome.stats,
            first_model_version=outcome.first_model_version, started_at=outcome.started_at,
            finished_at=outcome.finished_at, engine_latency_s=outcome.engine_latency_s,
            overhead_s=outcome.overhead_s, replica=outcome.replica, node=outcome.node,
        )
        self._last_progress = time.monotonic()
        self._publish_rollout_metrics(traj, outcome.ended_by)
        group = self.scheduler.finish(slot, traj)
        if group is not None:
            self._complete_group(group)

    def _complete_group(self, group: list[Trajectory]) -> None:
        rewards = [t.reward for t in group]
        adv = group_advantages(rewards, eps=self.config.advantage_eps,
                               drop_zero_variance=self.config.drop_zero_variance_groups)
        self.counters["groups"] += 1
        metrics: dict[str, Any] = {"rollout/groups_total": 1.0}
        if adv.dropped == "zero_variance":
            self.counters["zero_variance_groups"] += 1
            metrics["rollout/zero_variance_groups_total"] = 1.0
        elif adv.dropped == "no_scorable":
            self.counters["no_scorable_groups"] += 1
            metrics["rollout/unscorable_groups_total"] = 1.0
        n_samples = 0
        for traj, advantage in zip(group, adv.advantages, strict=True):
            if advantage is not None:
                for sample, turns in zip(build_samples(traj, advantage, adv.reward_std), turn_tokens(traj),
                                         strict=True):
                    self.rollout_buffer.note_turns(sample, turns)
                    self._backlog.append(sample)
                    n_samples += 1
            if self.config.keep_trajectories:
                self.trajectories.put(traj.record(advantage, adv.dropped))
        self._flush_backlog()
        self.counters["samples"] += n_samples
        metrics["rollout/samples_total"] = float(n_samples)
        metrics["rollout/queue_depth"] = float(self.rollout_buffer.qsize())
        self._put_metrics(metrics)

    def _publish_rollout_metrics(self, traj: Trajectory, ended_by: TurnEnd | None) -> None:
        self.counters["rollouts"] += 1
        res, stats = traj.result, traj.stats
        self.rollout_buffer.generated_tokens += int(stats.get("sampled_tokens", 0))
        elapsed = max(time.monotonic() - self._started_at, 1e-9)
        m: dict[str, Any] = {
            "rollout/rollouts_total": 1.0,
            "rollout/rollouts_per_s": self.counters["rollouts"] / elapsed,
            "rollout/turns": float(stats.get("turns", 0)),
            "rollout/forks_total": float(stats.get("forks", 0)),
            "rollout/sampled_tokens_total": float(stats.get("sampled_tokens", 0)),
            "rollout/trained_tokens_total": float(stats.get("trained_tokens", 0)),
            "rollout/parse_failures_total": float(stats.get("parse_failures", 0)),
            "rollout/overlong_total": float(res.status is EpisodeStatus.OVERLONG),
            "rollout/unscorable_total": float(not res.scorable),
            # ended by the turn server because the policy moved past max_staleness (it could no longer be trained)
            "rollout/aborted_stale_total": float(ended_by is TurnEnd.STALE),
            "rollout/scorable": (float(res.scorable), 1.0),
        }
        if res.scorable and res.reward is not None:
            m["rollout/reward_mean"] = float(res.reward)
            m["rollout/resolved"] = (float(res.resolved), 1.0)
        if traj.engine_latency_s:
            m["rollout/engine_latency_s"] = sum(traj.engine_latency_s) / len(traj.engine_latency_s)
        if traj.overhead_s:
            m["rollout/gate_overhead_ms"] = 1000 * sum(traj.overhead_s) / len(traj.overhead_s)
        self._put_metrics(m)

    def _put_metrics(self, metrics: dict[str, Any]) -> None:
        try:
            self.metrics_queue.put_nowait(metrics)
        except queue.Full:
            self.counters["dropped_metrics"] += 1  # the trainer drains it at every log; losing a window is benign
