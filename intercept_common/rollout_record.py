"""The rollout record: one line of rollouts.jsonl (`intercept-rl rollouts`, `<output_dir>/rollouts.jsonl`) as a type.

`rollout_worker.trajectory.Trajectory.record` builds a `RolloutRecord` and publishes its `to_json()` dict (the
queue and the files carry JSON); every reader — `trainer.inspect_page`, `trainer.traces`, the scripts under gpu/ —
parses a line with `RolloutRecord.from_json` and reads attributes, never string keys. `to_json()` writes the keys
in the order the files always had, so `json.dumps(RolloutRecord.from_json(d).to_json()) == json.dumps(d)` for every
line written since the format has had these keys; lines from older versions (no `drift`, missing keys) still load,
with the defaults below, and keys this class does not know are kept in `extra` and written back after the known ones.
`replica` (the engine URL that served the rollout) and `node` (the rollout node that ran it) are written only when
known, so older lines round-trip unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DriftStats:
    """Token-exactness drift of one rollout (design §3): forks, sampled vs trained tokens, unparsable answers."""

    forks: int = 0
    sampled_tokens: int = 0
    trained_tokens: int = 0
    parse_failures: int = 0

    @property
    def sampled_not_trained(self) -> int:
        return self.sampled_tokens - self.trained_tokens

    def to_json(self) -> dict[str, int]:
        return {"forks": self.forks, "sampled_tokens": self.sampled_tokens, "trained_tokens": self.trained_tokens,
                "parse_failures": self.parse_failures}

    @classmethod
    def from_stats(cls, stats: dict[str, float]) -> DriftStats:
        """From a rollout's counters (`Trajectory.stats`, missing ones are 0)."""
        return cls(*(int(stats.get(name, 0)) for name in ("forks", "sampled_tokens", "trained_tokens",
                                                           "parse_failures")))


@dataclass(frozen=True)
class RecordRow:
    """One training row of a record (a fork starts a new one): token ids, the sampled-token mask, the engine's
    log-probs (0 on context tokens) and the policy version of each sampled turn."""

    input_ids: tuple[int, ...] = ()
    completion_mask: tuple[int, ...] = ()
    old_log_probs: tuple[float, ...] = ()
    model_versions: tuple[int | None, ...] = ()

    @property
    def sampled(self) -> int:
        return sum(self.completion_mask)

    def to_json(self) -> dict[str, list]:
        return {"input_ids": list(self.input_ids), "completion_mask": list(self.completion_mask),
                "old_log_probs": list(self.old_log_probs), "model_versions": list(self.model_versions)}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> RecordRow:
        return cls(tuple(row.get("input_ids") or ()), tuple(row.get("completion_mask") or ()),
                   tuple(row.get("old_log_probs") or ()), tuple(row.get("model_versions") or ()))


_KNOWN = ("rollout_id", "task_id", "group_id", "group_index", "status", "reward", "resolved", "scorable", "advantage",
          "group_dropped", "turns", "rows", "drift", "model_version", "timings", "turn_timings", "exit_code",
          "details", "agent_output", "replica", "node")


@dataclass(frozen=True)
class RolloutRecord:
    """One finished rollout as written to rollouts.jsonl. `drift` is None only for a line from before it existed."""

    rollout_id: str | None = None
    task_id: str | None = None
    group_id: int | None = None
    group_index: int | None = None
    status: str | None = None
    reward: float | None = None
    resolved: bool = False
    scorable: bool = True
    advantage: float | None = None
    group_dropped: str | None = None
    turns: int = 0
    rows: tuple[RecordRow, ...] = ()
    drift: DriftStats | None = None
    model_version: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    turn_timings: dict[str, list[float]] = field(default_factory=dict)
    exit_code: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    agent_output: str = ""
    replica: str | None = None  # the engine replica's URL that sampled every turn (None: a line from before it)
    node: str | None = None  # the rollout node that ran it: "local" or a Ray node's "host/node-id" (docs/scale.md)
    extra: dict[str, Any] = field(default_factory=dict)  # keys of other versions, written back unchanged

    @property
    def trained(self) -> bool:
        """Whether its group went to training (a scorable member of a group that was not dropped)."""
        return self.advantage is not None and not self.group_dropped

    @property
    def forks(self) -> int:
        """Forks counted by the worker; for an old line without drift counters, one per row after the first."""
        return self.drift.forks if self.drift is not None else max(len(self.rows) - 1, 0)

    @property
    def policy_versions(self) -> list[int]:
        """The policy versions that sampled any turn of it, ascending."""
        return sorted({v for row in self.rows for v in row.model_versions if v is not None})

    def to_json(self) -> dict[str, Any]:
        """The JSON line's dict, keys in the files' order."""
        line = {name: getattr(self, name) for name in _KNOWN}
        line["rows"] = [row.to_json() for row in self.rows]
        for optional in ("replica", "node"):
            if line[optional] is None:
                del line[optional]
        if self.drift is None:
            del line["drift"]
        else:
            line["drift"] = self.drift.to_json()
        return {**line, **self.extra}

    @classmethod
    def from_json(cls, line: dict[str, Any]) -> RolloutRecord:
        """Parse one line's dict (any version of the format: missing keys take the defaults above)."""
        drift = line.get("drift")
        known = {name: line[name] for name in _KNOWN if name in line and name not in ("rows", "drift")}
        return cls(**known,
                   rows=tuple(RecordRow.from_json(row) for row in line.get("rows") or ()),
                   drift=DriftStats(**{k: int(v) for k, v in drift.items() if k in DriftStats.__dataclass_fields__})
                   if isinstance(drift, dict) else None,
                   extra={k: v for k, v in line.items() if k not in _KNOWN})
