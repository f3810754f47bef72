"""Several engine replicas end to end: two real local engines (tiny Qwen3, own processes), the real gate, worker and
scripted openai-SDK agent processes, and the real `intercept-rl rollouts` entry point for its early error.

- rollouts spread over both replicas, and every turn of a rollout went to the one replica its record names;
- a replica killed mid-run is taken out of rotation with one warning, its rollouts end infra_error (unscorable), the
  others (and rollouts launched after) finish on the survivor, nothing is left running;
- a second URL that does not answer is a one-line error before anything starts.

The engines are shared with tests/rollout_worker/test_ray_cluster.py (tests/rollout_worker/conftest.py: each takes
~10 s to start on an idle 2-core box, far longer under load); the kill tests kill them, so they run last: this module
comes after test_ray_cluster.py, and the kill tests are its last.
"""

from __future__ import annotations

import json
import logging
import os
import threading

import pytest

from rollout_worker.config import WorkerConfig
from rollout_worker.outcomes import EpisodeStatus
from rollout_worker.serving.chat_template import resolve_training_template
from rollout_worker.serving.replicas import ReplicaState
from rollout_worker.types import Task
from rollout_worker.worker import RolloutWorker
from tests.rollout_worker.test_worker import ScriptedAgentRunner, _drain

pytestmark = pytest.mark.slow


def _worker(tokenizer, urls, *, n_tasks, max_inflight, turns, down_grace_s=60.0):
    tasks = [Task(instance_id=f"task{i}", repo="demo/repo", base_commit="0" * 40, problem_statement="fix it")
             for i in range(n_tasks)]
    config = WorkerConfig(num_generations=1, max_inflight=max_inflight, max_groups=n_tasks, max_tokens_per_turn=8,
                          seed=0, keep_trajectories=True, drop_zero_variance_groups=False,
                          engine_down_grace_s=down_grace_s)
    runner = ScriptedAgentRunner({"SCRIPTED_TURNS": str(turns)})
    worker = RolloutWorker(config, tasks=tasks, episode_runner=runner, tokenizer=tokenizer,
                           chat_template=resolve_training_template(tokenizer), engine_url=urls)
    return worker, runner


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_bad_second_url_is_one_line_before_anything_starts(engines, tmp_path, capsys):
    from rollout_worker.cli import main

    out = tmp_path / "r.jsonl"
    code = main(["--engine-url", f"{engines[0].url},http://127.0.0.1:9", "--tasks", "learning", "--agent",
                 "single-shot", "--max-tasks", "1", "--out", str(out)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code != 0 and "Traceback" not in "\n".join(lines)
    assert lines[-1].startswith("intercept-rl rollouts: cannot reach the engine at http://127.0.0.1:9"), lines
    assert not out.exists()  # no worker ran: nothing was written


def test_rollouts_spread_over_replicas_and_each_stays_on_one(engines, tokenizer):
    urls = [e.url for e in engines]
    worker, _ = _worker(tokenizer, urls, n_tasks=4, max_inflight=4, turns=2)
    worker.start()
    try:
        _, records = _drain(worker, 4, timeout=300)
    finally:
        worker.stop()
    assert len(records) == 4 and all(r["status"] == "completed" for r in records), [r["status"] for r in records]
    per_replica = {url: [r for r in records if r["replica"] == url] for url in urls}
    assert [len(v) for v in per_replica.values()] == [2, 2]  # four launched at once: least loaded alternates
    stats = worker.replicas.stats()
    for url, recs in per_replica.items():
        # The calls each replica's client actually sent == the turns of the rollouts that name it: no rollout's turn
        # went anywhere else (the scripted agent makes 3 calls: 2 turns and a forking one).
        assert stats[url]["calls"] == sum(r["turns"] for r in recs) == 3 * len(recs), (url, stats)


def test_a_killed_replica_leaves_rotation_and_the_run_goes_on(engines, tokenizer, caplog):
    survivor, victim = engines
    worker, runner = _worker(tokenizer, [survivor.url, victim.url], n_tasks=4, max_inflight=2, turns=6)
    caplog.set_level(logging.WARNING, logger="rollout_worker.serving.replicas")
    worker.start()
    try:
        deadline_ok = _wait(lambda: worker.replicas is not None and worker.replicas.replicas[1].calls >= 2, 120)
        assert deadline_ok, "no call reached the second replica"
        victim.proc.kill()  # SIGKILL: the engine is gone mid-run, connections refused from now on
        victim.proc.wait(timeout=30)
        _, records = _drain(worker, 4, timeout=300)
    finally:
        worker.stop()
    assert len(records) == 4
    on_victim = [r for r in records if r["replica"] == victim.url]
    on_survivor = [r for r in records if r["replica"] == survivor.url]
    assert len(on_victim) == 1 and len(on_survivor) == 3  # the two launched after the kill went to the survivor
    for rec in on_victim:
        assert rec["status"] == EpisodeStatus.INFRA_ERROR and not rec["scorable"] and rec["reward"] is None, rec
        assert rec["details"]["turn_end"] == "engine_error" and victim.url in rec["details"]["error"]
    assert all(r["status"] == "completed" and r["scorable"] for r in on_survivor), [r["status"] for r in on_survivor]
    assert worker.replicas.replicas[1].state is ReplicaState.DOWN
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and victim.url in warnings[0] and "out of rotation" in warnings[0], warnings
    assert not [pid for pid in runner.pids if _alive(pid)]  # no agent left running
    assert victim.proc.poll() is not None


def _wait(predicate, timeout_s: float) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_when_the_last_replica_goes_the_run_ends_with_one_line(engines, tokenizer, tmp_path, capsys):
    """After the kill test only the first engine is left: kill it mid-run under the `rollouts` command's own loop.
    It is given 2 s to answer /health again (engine_down_grace_s), then the run ends."""
    from rollout_worker.cli import _run

    last = engines[0]
    worker, runner = _worker(tokenizer, [last.url], n_tasks=3, max_inflight=1, turns=6, down_grace_s=2.0)
    killer = threading.Thread(target=lambda: _wait(lambda: worker.replicas is not None
                                                   and worker.replicas.replicas[0].calls >= 2, 120)
                              and last.proc.kill())
    killer.start()
    code = _run(worker, 3, tmp_path / "r.jsonl", quiet=True)
    killer.join(timeout=10)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1
    assert err[-1].startswith(f"intercept-rl rollouts: every engine replica stopped answering: {last.url} ("), err
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["status"] == "infra_error"  # filed before the run ended
    assert not [pid for pid in runner.pids if _alive(pid)]
