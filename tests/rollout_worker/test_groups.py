"""Group, advantage, zero-variance and resume rules of the GRPO scheduler."""

import math

import numpy as np
import pytest

from rollout_worker.groups import GroupScheduler, group_advantages
from rollout_worker.types import Task


def _tasks(n):
    return [Task(instance_id=f"t{i}", repo="r", base_commit="c", problem_statement="p") for i in range(n)]


def test_slots_never_overfill_a_group_even_with_members_in_flight():
    sched = GroupScheduler(_tasks(3), num_generations=4, seed=1)
    slots = [sched.next_slot() for _ in range(10)]  # nothing finished yet: all in flight
    by_group = {}
    for s in slots:
        by_group.setdefault(s.group_id, []).append(s)
    assert [len(v) for v in by_group.values()] == [4, 4, 2]
    for members in by_group.values():
        assert len({m.task.instance_id for m in members}) == 1
        assert [m.index for m in members] == list(range(len(members)))


def test_group_completes_only_when_every_member_finished_in_slot_order():
    sched = GroupScheduler(_tasks(2), num_generations=3, seed=0)
    a, b, c = (sched.next_slot() for _ in range(3))
    assert sched.finish(c, "c") is None
    assert sched.finish(a, "a") is None
    assert sched.finish(b, "b") == ["a", "b", "c"]
    with pytest.raises(ValueError):
        sched.finish(a, "again")


def test_task_order_is_a_seeded_shuffle_reshuffled_each_pass():
    def order(seed, n_groups):
        s = GroupScheduler(_tasks(5), num_generations=1, seed=seed)
        return [s.next_slot().task.instance_id for _ in range(n_groups)]

    first = order(7, 10)
    assert first == order(7, 10)  # reproducible
    assert sorted(first[:5]) == sorted(first[5:]) == [f"t{i}" for i in range(5)]  # every task once per pass
    assert order(7, 5) != order(8, 5) or order(7, 5) != order(9, 5)


def test_max_groups_stops_handing_out_slots():
    sched = GroupScheduler(_tasks(4), num_generations=2, seed=0, max_groups=2)
    slots = [sched.next_slot() for _ in range(4)]
    assert all(slots) and sched.next_slot() is None and sched.exhausted


def test_resume_continues_the_task_order_and_restarts_unfinished_groups():
    full = GroupScheduler(_tasks(6), num_generations=2, seed=3)
    order = []
    for _ in range(5):
        s1, s2 = full.next_slot(), full.next_slot()
        order.append(s1.task.instance_id)
        full.finish(s1, 1), full.finish(s2, 1)

    first = GroupScheduler(_tasks(6), num_generations=2, seed=3)
    for _ in range(2):  # two complete groups
        s1, s2 = first.next_slot(), first.next_slot()
        first.finish(s1, 1), first.finish(s2, 1)
    cut = first.next_slot()  # a third group is in flight when the run stops
    state = first.state_dict()

    resumed = GroupScheduler(_tasks(6), num_generations=2, seed=3)
    resumed.load_state_dict(state)
    got = []
    for _ in range(3):
        s1, s2 = resumed.next_slot(), resumed.next_slot()
        got.append(s1.task.instance_id)
        assert s1.group_id >= 3  # fresh ids, never reused
        resumed.finish(s1, 1), resumed.finish(s2, 1)
    assert cut.task.instance_id == order[2]
    assert got == order[2:5]

    with pytest.raises(ValueError, match="same tasks and seed"):
        GroupScheduler(_tasks(5), num_generations=2, seed=3).load_state_dict(state)


def test_advantages_normalize_over_scorable_members_only():
    adv = group_advantages([1.0, 0.0, None, 1.0, 0.0])
    assert adv.advantages[2] is None
    scored = np.array([1.0, 0.0, 1.0, 0.0])
    expected = (scored - scored.mean()) / (scored.std() + 1e-8)
    assert [a for a in adv.advantages if a is not None] == pytest.approx(list(expected))
    assert adv.reward_mean == pytest.approx(0.5) and adv.dropped is None
    # the unscorable member does not drag the baseline toward 0
    assert group_advantages([1.0, None, None, 0.0]).reward_mean == pytest.approx(0.5)


def test_zero_variance_groups_are_dropped_unless_configured():
    dropped = group_advantages([1.0, 1.0, None])
    assert dropped.dropped == "zero_variance" and dropped.advantages == [None, None, None]
    kept = group_advantages([1.0, 1.0, None], drop_zero_variance=False)
    assert kept.dropped is None and kept.advantages == [0.0, 0.0, None]
    single = group_advantages([None, 0.5, None])
    assert single.dropped == "zero_variance"


def test_group_with_no_scorable_member_trains_nothing():
    adv = group_advantages([None, None])
    assert adv.dropped == "no_scorable" and adv.advantages == [None, None]
    assert math.isnan(adv.reward_mean)
