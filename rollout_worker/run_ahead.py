"""Bounded run-ahead: launch only the rollouts the trainer can still train inside `max_staleness` (design §13).

TRL drops a sample at dequeue when `trainer version − sample.model_version > max_staleness`. A worker that keeps
`max_inflight` rollouts going regardless generates samples that are already doomed when they start: with the learning
demo's `max_staleness 0`, two thirds of all generation was dropped (issue #27). The trainer consumes a known number
of samples per policy version (`samples_per_version`: the fixed-count batch times the steps between weight syncs), so
a rollout launched now, at version V, is trained within the bound exactly when everything ahead of it fits:

    pending + k <= (max_staleness + 1) * samples_per_version - taken_this_version

where `pending` counts the samples not yet handed to the trainer (queued, waiting in the backlog, and `k` per rollout
held in a partial group or still running), `k` is the mean number of samples per finished rollout so far, at least
1 (an agent whose history forks trains one sample per row; unscorable rollouts give none; until the first group
completes, `k` is unknown and only that group runs), and `taken_this_version` the
samples the trainer already took for training at the current version (stale ones it drops do not count: they fill no
slot). A group whose first member was launched is always completed, so a group never waits for members that the
bound would refuse. When nothing is in flight and the samples pending fall short of what the trainer takes, a rollout
is always admitted, even if `k` exceeds the gap (a forking agent): otherwise the trainer would wait forever.
Rollouts that fall behind anyway (a slow multi-turn rollout overtaken by faster ones) are aborted at their next turn
by the turn server's stale check and counted (`rollout/aborted_stale_total`).

`TrainerFeed` is the worker's `rollout_buffer`: a `queue.Queue` whose `_get` hook (the documented subclass hook, run
when the trainer dequeues) counts what the trainer takes, and reports per-token staleness and generation utilisation.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Per-token staleness histogram buckets: 0, 1, 2, 3 and "4 or more" versions behind the trainer.
STALENESS_BUCKETS = 4


@dataclass(frozen=True)
class RunAheadBound:
    """The admission rule above, as a pure function of the counts (unit-tested by hand)."""

    max_staleness: int
    samples_per_version: int

    @property
    def capacity(self) -> int:
        """Samples the trainer takes from now through the last version a rollout started now may be trained at."""
        return (self.max_staleness + 1) * self.samples_per_version

    def admits(self, pending: float, taken_this_version: int, group_partly_launched: bool = False,
               per_rollout: float = 1.0, in_flight: int = 0) -> bool:
        """`pending` in samples; a new rollout adds `per_rollout` samples (the worker's running mean, at least 1:
        an agent whose history forks trains one sample per row); `in_flight` rollouts are still running or held in
        a partial group (their samples in `pending` are estimates)."""
        if group_partly_launched:
            return True
        room = self.capacity - taken_this_version
        # Every sample counted and still short of what the trainer takes at this version: always launch, even when
        # a rollout is expected to give more samples than fit (a forking agent's mean can exceed the gap; refusing
        # would leave the trainer waiting forever).
        return pending + per_rollout <= room or (in_flight == 0 and pending < room)


def token_staleness_metrics(versions: list[tuple[int, int]], trainer_version: int) -> dict[str, tuple[float, float]]:
    """Rates over sampled tokens: the share of tokens 0, 1, 2, 3 and 4+ versions old, and the mean staleness.

    `versions`: `(policy version, sampled tokens)` of each turn of one sample.
    """
    tokens = float(sum(n for _, n in versions))
    buckets = [0.0] * (STALENESS_BUCKETS + 1)
    weighted = 0.0
    for version, n in versions:
        staleness = max(0, trainer_version - version)
        buckets[min(staleness, STALENESS_BUCKETS)] += n
        weighted += staleness * n
    metrics = {f"off_policy/token_staleness_{i}": (buckets[i], tokens) for i in range(STALENESS_BUCKETS)}
    metrics[f"off_policy/token_staleness_{STALENESS_BUCKETS}plus"] = (buckets[STALENESS_BUCKETS], tokens)
    metrics["off_policy/token_staleness_mean"] = (weighted, tokens)
    return metrics


class TrainerFeed(queue.Queue):
    """The rollout queue TRL reads (`rollout_buffer`), counting what the trainer takes.

    Args:
        maxsize: queue capacity.
        trainer_version: the trainer's current policy version (the worker's copy, updated after every weight sync).
        max_staleness: TRL's bound; a sample older than it is taken but dropped by TRL, and counted as such here.
        publish: where the per-sample metrics go (the worker's metrics queue).
    """

    def __init__(self, maxsize: int, trainer_version: Callable[[], int], max_staleness: int | None,
                 publish: Callable[[dict[str, Any]], None]):
        super().__init__(maxsize=maxsize)
        self.trainer_version = trainer_version
        self.max_staleness = max_staleness
        self.publish = publish
        self._turns: dict[int, list[tuple[int, int]]] = {}  # id(sample) -> (version, tokens) per turn
        self._count_lock = threading.Lock()
        self.taken_fresh = 0  # samples the trainer took to train (not dropped as stale)
        self.trained_tokens = 0  # their sampled tokens
        self.generated_tokens = 0  # every sampled token of every finished rollout (the worker adds them)
        self._generated_reported = 0

    def note_turns(self, sample: Any, turns: list[tuple[int, int]]) -> None:
        """Record a sample's per-turn versions before it is put (TRL's RolloutSample has slots: no attribute)."""
        self._turns[id(sample)] = turns

    def _get(self):  # queue.Queue's hook, called under its mutex by get()/get_nowait()
        sample = super()._get()
        turns = self._turns.pop(id(sample), None)
        version = self.trainer_version()
        stale = self.max_staleness is not None and version - int(sample.model_version) > self.max_staleness
        if not stale:
            tokens = int(sample.completion_mask.sum())
            with self._count_lock:
                self.taken_fresh += 1
                self.trained_tokens += tokens
            metrics: dict[str, Any] = token_staleness_metrics(turns, version) if turns else {}
            # A rate (Σ trained ÷ Σ generated sampled tokens over the logging window; 1.0 = nothing generated was
            # wasted): this sample's tokens over the tokens generated since the previous sample was taken.
            generated, self._generated_reported = (self.generated_tokens - self._generated_reported,
                                                   self.generated_tokens)
            metrics["off_policy/generation_utilisation"] = (float(tokens), float(generated))
            self.publish(metrics)
        return sample
