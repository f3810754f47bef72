"""GRPO groups: which task each rollout runs, when a group is complete, and its advantages.

A group is `num_generations` rollouts of one task. Slots are handed out up front, so rollouts still in flight count
toward their group and a group is never over-filled; a failed rollout is never silently replaced (that would bias
the baseline toward the rollouts that happened to survive).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from .types import Task

T = TypeVar("T")


@dataclass(frozen=True)
class Slot:
    """One rollout's place: which task, which group, which member of it."""

    task: Task
    group_id: int
    index: int


@dataclass
class _OpenGroup(Generic[T]):
    task: Task
    group_id: int
    launched: int = 0
    results: dict[int, T] = field(default_factory=dict)


class GroupScheduler(Generic[T]):
    """Hands out slots in task order and collects finished members into complete groups.

    The task order is a seeded shuffle, reshuffled each pass with `seed + pass`, so a run is reproducible and a
    resumed run (`load_state_dict`) continues with the next task instead of repeating the ones already trained on.
    """

    def __init__(self, tasks: list[Task], num_generations: int, seed: int = 0, max_groups: int | None = None):
        if not tasks:
            raise ValueError("no tasks to run")
        self.tasks = list(tasks)
        self.num_generations = num_generations
        self.seed = seed
        self.max_groups = max_groups
        self._pass = 0
        self._position = 0  # next index into the current pass's order
        self._order = self._shuffled(0)
        self._next_group_id = 0
        self._filling: _OpenGroup[T] | None = None
        self._open: dict[int, _OpenGroup[T]] = {}
        self._restart: list[Task] = []  # tasks of groups a previous run left unfinished; they go first

    def _shuffled(self, pass_index: int) -> list[int]:
        order = list(range(len(self.tasks)))
        random.Random(self.seed + pass_index).shuffle(order)
        return order

    @property
    def groups_started(self) -> int:
        return self._next_group_id

    @property
    def exhausted(self) -> bool:
        """True once `max_groups` groups were started and every slot of the last one was handed out."""
        return (
            self.max_groups is not None
            and self._next_group_id >= self.max_groups
            and (self._filling is None or self._filling.launched >= self.num_generations)
        )

    @property
    def held_results(self) -> int:
        """Finished members waiting in groups that are not complete yet."""
        return sum(len(group.results) for group in self._open.values())

    @property
    def group_partly_launched(self) -> bool:
        """True while the group being filled has launched some but not all of its members."""
        return self._filling is not None and 0 < self._filling.launched < self.num_generations

    def next_slot(self) -> Slot | None:
        """The next rollout to launch, or None when `max_groups` is reached."""
        if self._filling is None or self._filling.launched >= self.num_generations:
            if self.max_groups is not None and self._next_group_id >= self.max_groups:
                return None
            self._filling = _OpenGroup(task=self._next_task(), group_id=self._next_group_id)
            self._open[self._next_group_id] = self._filling
            self._next_group_id += 1
        group = self._filling
        slot = Slot(task=group.task, group_id=group.group_id, index=group.launched)
        group.launched += 1
        return slot

    def _next_task(self) -> Task:
        if self._restart:
            return self._restart.pop(0)
        if self._position >= len(self._order):
            self._pass += 1
            self._position = 0
            self._order = self._shuffled(self._pass)
        task = self.tasks[self._order[self._position]]
        self._position += 1
        return task

    def finish(self, slot: Slot, result: T) -> list[T] | None:
        """Record a member's result; return the whole group's results (in slot order) once all members are done."""
        group = self._open.get(slot.group_id)
        if group is None or slot.index in group.results:
            raise ValueError(f"slot {slot.group_id}/{slot.index} is not open")
        group.results[slot.index] = result
        if len(group.results) < self.num_generations:
            return None
        del self._open[slot.group_id]
        if self._filling is group:
            self._filling = None
        return [group.results[i] for i in range(self.num_generations)]

    def state_dict(self) -> dict[str, Any]:
        """Where the task order stands. Groups in flight at save time are restarted from their task on resume."""
        restart = sorted(self._open.values(), key=lambda g: g.group_id)
        return {
            "seed": self.seed,
            "num_tasks": len(self.tasks),
            "pass": self._pass,
            "position": self._position,
            "next_group_id": self._next_group_id,
            "unfinished_task_ids": [g.task.instance_id for g in restart],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("num_tasks") != len(self.tasks) or state.get("seed") != self.seed:
            raise ValueError(
                f"worker state was saved with {state.get('num_tasks')} tasks and seed {state.get('seed')}, "
                f"this run has {len(self.tasks)} tasks and seed {self.seed}: resume with the same tasks and seed"
            )
        self._pass = int(state["pass"])
        self._order = self._shuffled(self._pass)
        self._position = int(state["position"])
        self._next_group_id = int(state["next_group_id"])
        self._filling = None
        self._open = {}
        # Groups cut off by the stop were not trained on: run them again first, under fresh group ids.
        by_id = {t.instance_id: t for t in self.tasks}
        self._restart = [by_id[i] for i in state.get("unfinished_task_ids", []) if i in by_id]


@dataclass(frozen=True)
class GroupAdvantages:
    """Per-member advantages (None: not trained) and why a group may be dropped."""

    advantages: list[float | None]
    reward_mean: float
    reward_std: float
    dropped: str | None  # "zero_variance", "no_scorable" or None


def group_advantages(
    rewards: list[float | None], *, eps: float = 1e-8, drop_zero_variance: bool = True
) -> GroupAdvantages:
    """(r − mean) / (std + eps) over the scorable members only; unscorable members (None) get no advantage.

    The population std (numpy's default) matches TRL's own async worker.
    """
    scored = np.array([r for r in rewards if r is not None], dtype=np.float64)
    if scored.size == 0:
        return GroupAdvantages([None] * len(rewards), float("nan"), float("nan"), "no_scorable")
    mean, std = float(scored.mean()), float(scored.std())
    if drop_zero_variance and (scored.size < 2 or np.all(scored == scored[0])):
        return GroupAdvantages([None] * len(rewards), mean, std, "zero_variance")
    advantages = [None if r is None else float((r - mean) / (std + eps)) for r in rewards]
    return GroupAdvantages(advantages, mean, std, None)
