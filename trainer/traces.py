"""Rollout traces in Trackio: every trained group's rollouts, in TRL's own trace format.

TRL's `log_rollout_traces` (trl.experimental.async_grpo) turns `RolloutSample`s into `trackio.Trace`s
(`messages` = prompt + completion, `metadata` = the sample's metrics + advantage, group_id, model_version,
prompt/completion token counts) and logs them under the key `rollouts`. TRL's own queue reader only samples 8 traces
every 8 policy versions; we log every rollout of every group that goes to training, through that same function, with
our rollout's facts added to the metadata: reward, advantage, policy version, turns, forks, end reason, task.

The rollout records (`Trajectory.record`, the lines of rollouts.jsonl) are teed off the worker's `trajectories`
queue (`TeeQueue`) and logged by `TraceCallback` at the end of each optimizer step, on the main thread, where the
Trackio run that transformers' `TrackioCallback` opened lives.
"""

from __future__ import annotations

import logging
import queue
import threading
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from intercept_common.rollout_record import RolloutRecord

logger = logging.getLogger(__name__)

TRACE_KEY = "rollouts"  # the key TRL logs its traces under


class TeeQueue(queue.Queue):
    """A `queue.Queue` that also hands every item it receives to `hook` (which must not block)."""

    def __init__(self, hook: Callable[[Any], None]):
        super().__init__()
        self.hook = hook

    def put(self, item, block=True, timeout=None):
        super().put(item, block, timeout)
        try:
            self.hook(item)
        except Exception as error:  # noqa: BLE001 - a trace hiccup must never break the rollout path
            logger.warning("rollout trace hook failed: %s", error)


def _typed(record: RolloutRecord | dict[str, Any]) -> RolloutRecord:
    return record if isinstance(record, RolloutRecord) else RolloutRecord.from_json(record)


def record_messages(record: RolloutRecord | dict[str, Any],
                    decode: Callable[[list[int]], str] | None) -> tuple[list, list]:
    """`(prompt, completion)` message lists of a record: its first row's non-trained context then each run of
    sampled tokens as an assistant message and each context run after it as a `user` message (tool results and
    template text as the engine saw them). Without a tokenizer, the token counts stand in for the text."""
    rows = _typed(record).rows
    prompt: list[dict[str, str]] = []
    completion: list[dict[str, str]] = []
    for row in rows[-1:]:  # the last row holds the whole conversation when there was no fork
        ids, mask = row.input_ids, row.completion_mask
        start = 0
        for i in range(1, len(ids) + 1):
            if i == len(ids) or mask[i] != mask[start]:
                chunk = ids[start:i]
                text = decode(chunk) if decode is not None else f"<{len(chunk)} tokens>"
                role = "assistant" if mask[start] else "user"
                (completion if (completion or mask[start]) else prompt).append({"role": role, "content": text})
                start = i
    return prompt, completion


def record_to_sample(record: RolloutRecord | dict[str, Any],
                     decode: Callable[[list[int]], str] | None = None) -> SimpleNamespace:
    """A stand-in for TRL's `RolloutSample` with what `log_rollout_traces` reads, from one rollout record."""
    record = _typed(record)
    rows = record.rows
    ids = [t for row in rows[-1:] for t in row.input_ids]
    mask = [m for row in rows[-1:] for m in row.completion_mask]
    prompt, completion = record_messages(record, decode)
    versions = record.policy_versions
    return SimpleNamespace(
        prompt=prompt,
        completion=completion,
        input_ids=np.asarray(ids, dtype=np.int64),
        completion_mask=np.asarray(mask, dtype=np.int64),
        advantage=float(record.advantage or 0.0),
        group_id=int(record.group_id or 0),
        model_version=int(min(versions) if versions else (record.model_version or 0)),
        metrics={
            "reward": float(record.reward or 0.0),
            "turns": int(record.turns or 0),
            "forks": record.drift.forks if record.drift is not None else 0,
            "end_reason": str(record.status),
            "task_id": str(record.task_id),
            "rollout_id": str(record.rollout_id),
            "policy_versions": ",".join(map(str, versions)),
            "rows": len(rows),
        },
    )


def is_trained(record: RolloutRecord | dict[str, Any]) -> bool:
    """A record whose group went to training (scorable member of a group that was not dropped)."""
    return _typed(record).trained


class TraceCollector:
    """Buffers rollout records (thread-safe) until the next `flush`, which logs the trained ones as traces."""

    def __init__(self, report_to: list[str], decode: Callable[[list[int]], str] | None = None):
        self.report_to = list(report_to or [])
        self.decode = decode
        self._lock = threading.Lock()
        self._pending: list[RolloutRecord] = []
        self.logged = 0

    def add(self, record: Any) -> None:
        if not isinstance(record, (dict, RolloutRecord)):
            return
        record = _typed(record)
        if record.trained:
            with self._lock:
                self._pending.append(record)

    def flush(self, step: int) -> int:
        with self._lock:
            records, self._pending = self._pending, []
        if not records or "trackio" not in self.report_to:
            return 0
        from intercept_common.trl_api import log_rollout_traces

        samples = [record_to_sample(r, self.decode) for r in records]
        log_rollout_traces(samples, step=step, report_to=self.report_to, max_traces=len(samples))
        self.logged += len(samples)
        return len(samples)


def make_trace_callback(collector: TraceCollector):
    """A `TrainerCallback` that logs the collected traces after every optimizer step (rank 0)."""
    from transformers import TrainerCallback

    class TraceCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                collector.flush(state.global_step)

    return TraceCallback()


def install(worker, report_to: list[str], tokenizer=None) -> TraceCollector:
    """Tee `worker.trajectories` into a `TraceCollector`; call before anything reads `worker.trajectories`."""
    decode = (lambda ids: tokenizer.decode(ids, skip_special_tokens=False)) if tokenizer is not None else None
    collector = TraceCollector(report_to, decode)
    old = worker.trajectories
    tee = TeeQueue(collector.add)
    while True:  # keep anything already published
        try:
            tee.put(old.get_nowait())
        except queue.Empty:
            break
    worker.trajectories = tee
    return collector
