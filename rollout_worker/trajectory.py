"""What one rollout leaves behind: its training rows, its outcome, its drift counters."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .groups import Slot
from intercept_common.rollout_record import DriftStats, RecordRow, RolloutRecord
from .types import EpisodeResult

if TYPE_CHECKING:
    from .serving.assembly import TrainingRow


@dataclass
class Trajectory:
    """A finished rollout, before its group is complete (the advantage comes with the group)."""

    rollout_id: str
    slot: Slot
    result: EpisodeResult
    rows: list[TrainingRow]
    stats: dict[str, float]
    first_model_version: int | None
    started_at: float
    finished_at: float = field(default_factory=time.time)
    # Per engine call, in order: the engine's latency and our own time around it (TurnServer's `TurnState`), seconds.
    engine_latency_s: list[float] = field(default_factory=list)
    overhead_s: list[float] = field(default_factory=list)
    replica: str | None = None  # the engine URL every turn was sampled from (rollouts are pinned to one replica)
    node: str | None = None  # the rollout node that ran it ("local": the coordinator's process; docs/scale.md)

    @property
    def reward(self) -> float | None:
        return self.result.reward if self.result.scorable else None

    def record(self, advantage: float | None, group_dropped: str | None) -> dict[str, Any]:
        """One JSON-serializable line for `intercept-rl rollouts` and tests: `rollout_record(...).to_json()`."""
        return self.rollout_record(advantage, group_dropped).to_json()

    def rollout_record(self, advantage: float | None, group_dropped: str | None) -> RolloutRecord:
        res = self.result
        return RolloutRecord(
            rollout_id=self.rollout_id,
            task_id=self.slot.task.instance_id,
            group_id=self.slot.group_id,
            group_index=self.slot.index,
            status=res.status,
            reward=res.reward,
            resolved=res.resolved,
            scorable=res.scorable,
            advantage=advantage,
            group_dropped=group_dropped,
            turns=int(self.stats.get("turns", 0)),
            rows=tuple(
                RecordRow(
                    input_ids=tuple(map(int, row.input_ids)),
                    completion_mask=tuple(map(int, row.completion_mask)),
                    old_log_probs=tuple(float(x) for x in row.old_log_probs),
                    model_versions=tuple(row.model_versions),
                )
                for row in self.rows
            ),
            drift=DriftStats.from_stats(self.stats),
            model_version=self.first_model_version,
            timings={**res.timings, "total": self.finished_at - self.started_at},
            # Per turn (10 µs resolution): where a turn's time went, engine vs our serving path.
            turn_timings={"engine_s": [round(x, 5) for x in self.engine_latency_s],
                          "overhead_s": [round(x, 5) for x in self.overhead_s]},
            exit_code=res.exit_code,
            details=res.details,
            agent_output=res.agent_output,
            replica=self.replica,
            node=self.node,
        )


def sample_type() -> type:
    """TRL's `RolloutSample`, imported on first use: its module loads TRL's whole async GRPO package (peft, trackio,
    torch's custom ops: ~1 s on a CPU box), which importing the worker should not pay. `RolloutWorker.start` calls it
    on the caller's thread, so the first complete group does not pay it on the worker's loop, stalling every turn."""
    from intercept_common.trl_api import RolloutSample

    return RolloutSample


def turn_tokens(traj: Trajectory) -> list[list[tuple[int, int]]]:
    """`(policy version, sampled tokens)` per turn, for each sample `build_samples` makes of `traj` (same order)."""
    return [list(zip(row.model_versions, row.turn_tokens, strict=True)) for row in traj.rows
            if any(row.completion_mask)]


def build_samples(traj: Trajectory, advantage: float, reward_std: float) -> list[Any]:
    """TRL `RolloutSample`s for every row of a trained rollout (one advantage per conversation, like TRL)."""
    RolloutSample = sample_type()

    samples = []
    for row in traj.rows:
        mask = np.asarray(row.completion_mask, dtype=np.int64)
        if not mask.any():
            continue
        samples.append(
            RolloutSample(
                prompt=row.prompt_messages,
                completion=row.completion_messages,
                input_ids=np.asarray(row.input_ids, dtype=np.int64),
                completion_mask=mask,
                old_log_probs=np.asarray(row.old_log_probs, dtype=np.float32),
                advantage=float(advantage),
                # The oldest turn's policy: staleness is judged by the most off-policy tokens in the row.
                model_version=int(min(row.model_versions)) if row.model_versions else 0,
                group_id=traj.slot.group_id,
                metrics={
                    "reward": float(traj.result.reward or 0.0),
                    "reward_std": float(reward_std),
                    "turns": float(traj.stats.get("turns", 0)),
                },
                enqueued_at=time.time(),
            )
        )
    return samples
