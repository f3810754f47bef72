"""The replica router (rollout_worker/serving/replicas.py): least loaded first, ties by order, pinned engines count
their calls, a replica whose transport fails goes out of rotation with one warning, and none left is an error."""

from __future__ import annotations

import logging

import pytest

from rollout_worker.protocols import EngineError, EngineUnreachableError
from rollout_worker.serving.replicas import NoReplicaLeftError, ReplicaSet, ReplicaState
from rollout_worker.types import Completion


class FakeEngine:
    def __init__(self, fail: Exception | None = None):
        self.fail, self.calls = fail, 0

    async def complete(self, prompt_ids, **kwargs):
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return Completion([1], [-0.5], "stop", len(prompt_ids), 0.0)

    async def max_model_len(self) -> int:
        return 64

    async def healthy(self) -> bool:
        return self.fail is None


def _set(n: int) -> ReplicaSet:
    return ReplicaSet([(f"http://r{i}", FakeEngine()) for i in range(n)])


def test_new_rollouts_go_to_the_least_loaded_replica_ties_by_fewest_given_then_order():
    replicas = _set(3)
    picks = [replicas.acquire().url for _ in range(4)]
    assert picks == ["http://r0", "http://r1", "http://r2", "http://r0"]  # ties by --engine-url order
    r1 = replicas.replicas[1]
    replicas.release(r1)  # r1 now has 0 in flight, the others 2 and 1
    assert replicas.acquire() is r1
    replicas.release(replicas.replicas[2])
    replicas.release(replicas.replicas[2])  # never below zero
    assert replicas.replicas[2].in_flight == 0
    assert replicas.acquire().url == "http://r2"
    assert [r.rollouts for r in replicas.replicas] == [2, 2, 2]


def test_rollouts_one_after_another_alternate_over_the_replicas():
    """Nothing in flight at each start (one slot, or a step's stragglers): each replica still gets its share."""
    replicas = _set(2)
    picks = []
    for _ in range(5):
        replica = replicas.acquire()
        picks.append(replica.url)
        replicas.release(replica)
    assert picks == ["http://r0", "http://r1", "http://r0", "http://r1", "http://r0"]


def test_a_preferred_replica_is_taken_while_it_is_up():
    """A cluster's coordinator chooses by its count over every node; the node honours it, or routes by its own."""
    replicas = _set(2)
    assert replicas.acquire(prefer="http://r1").url == "http://r1"
    replicas.mark_down(replicas.replicas[1], "refused")
    assert replicas.acquire(prefer="http://r1").url == "http://r0"


async def test_pinned_engine_counts_calls_and_takes_a_gone_replica_out_once(caplog):
    replicas = ReplicaSet([("http://a", FakeEngine()),
                           ("http://b", FakeEngine(EngineUnreachableError("connection refused")))])
    a, b = replicas.acquire(), replicas.acquire()
    engine_a, engine_b = replicas.engine_for(a), replicas.engine_for(b)
    await engine_a.complete([1, 2], max_tokens=4)
    with caplog.at_level(logging.WARNING), pytest.raises(EngineUnreachableError):
        await engine_b.complete([1, 2], max_tokens=4)
    assert b.state is ReplicaState.DOWN and replicas.up == [a]
    with pytest.raises(EngineUnreachableError):  # a pinned rollout still tries its replica; no second warning
        await engine_b.complete([1, 2], max_tokens=4)
    assert b.engine.calls == 2 and (a.calls, b.calls) == (1, 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "http://b" in warnings[0] and "out of rotation" in warnings[0]
    assert all(replicas.acquire() is a for _ in range(3))  # new rollouts avoid the dead replica
    assert replicas.stats()["http://b"] == {"state": "down", "rollouts": 1, "calls": 2}


async def test_an_answer_that_is_not_a_transport_failure_keeps_the_replica():
    replicas = ReplicaSet([("http://a", FakeEngine(EngineError("HTTP 500: bug", 500)))])
    engine = replicas.engine_for(replicas.acquire())
    with pytest.raises(EngineError):
        await engine.complete([1], max_tokens=1)
    assert replicas.up  # a request's failure is not the server's death


def test_none_left_is_one_error_naming_every_replica():
    replicas = _set(2)
    for replica in replicas.replicas:
        replicas.mark_down(replica, "ClientConnectorError: refused")
    with pytest.raises(NoReplicaLeftError, match=r"http://r0 \(ClientConnectorError: refused\); http://r1"):
        replicas.acquire()


async def test_replicas_must_agree_on_max_model_len():
    class Short(FakeEngine):
        async def max_model_len(self) -> int:
            return 32

    assert await _set(2).max_model_len() == 64
    with pytest.raises(ValueError, match="http://b: 32"):
        await ReplicaSet([("http://a", FakeEngine()), ("http://b", Short())]).max_model_len()


async def test_with_none_up_the_first_replica_that_answers_again_comes_back():
    import asyncio

    replicas = ReplicaSet([("http://a", FakeEngine(EngineUnreachableError("refused"))), ("http://b", FakeEngine())])
    for replica in replicas.replicas:
        replicas.mark_down(replica, "refused")
    assert await replicas.wait_for_one_back(5.0, asyncio.Event())  # b answers /health: back at once
    assert [r.url for r in replicas.up] == ["http://b"]

    dead = ReplicaSet([("http://a", FakeEngine(EngineUnreachableError("refused")))])
    dead.mark_down(dead.replicas[0], "refused")
    assert not await dead.wait_for_one_back(0.2, asyncio.Event())  # the grace ends: the caller ends the run
    stop = asyncio.Event()
    stop.set()
    assert not await dead.wait_for_one_back(60.0, stop)  # a stop request ends the wait at once
