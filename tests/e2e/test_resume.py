"""Checkpoint and resume of `intercept-rl train` (issue 5 §5), and the run's `rollouts.jsonl`.

The slow test runs the real CLI twice in subprocesses — tiny model, local engine, bubblewrap sandboxes, the
single-shot agent, host-side grading, TRL's AsyncGRPOTrainer — stops after 2 steps, resumes to 4, and checks that the
second run continues at step 3 with the worker's seeded task order intact. The fast tests pin the record writer and
the pieces the train main wires together.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from rollout_worker.environment.tasks import load_tasks
from rollout_worker.groups import GroupScheduler
from tests.paths import REPO
from tests.support.sandboxes import processes_with_marker, run_to_end
from trainer.checkpoints import (
    WORKER_STATE_FILE,
    WorkerStateCallback,
    load_worker_state,
    restore_model_version,
)
from trainer.rollout_records import ROLLOUTS_FILE, RolloutRecordWriter

# -- the record writer -------------------------------------------------------------------------------------------


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_records_are_on_disk_while_the_run_goes_on(tmp_path):
    records: queue.Queue = queue.Queue()
    path = tmp_path / "out" / ROLLOUTS_FILE
    writer = RolloutRecordWriter(records, path, append=False, poll_s=0.05).start()
    try:
        records.put({"task_id": "a", "reward": 0.5, "scorable": True})
        # Flushed per line: a reader (or a run killed right now) sees the record before the writer closes.
        assert _wait_for(lambda: path.is_file() and path.read_text().count("\n") == 1)
        assert _lines(path) == [{"task_id": "a", "reward": 0.5, "scorable": True}]
    finally:
        writer.close(timeout_s=10)


def test_close_writes_what_is_still_queued_and_a_fresh_run_starts_a_new_file(tmp_path):
    path = tmp_path / ROLLOUTS_FILE
    path.write_text('{"old": true}\n')
    records: queue.Queue = queue.Queue()
    writer = RolloutRecordWriter(records, path, append=False, poll_s=0.05).start()
    for i in range(50):  # what the worker published right before it stopped
        records.put({"i": i, "reward": None, "scorable": False})
    writer.close(timeout_s=10)
    assert [r["i"] for r in _lines(path)] == list(range(50))  # the old run's line is gone, nothing is lost
    assert writer.written == 50 and records.empty()


def test_a_resumed_run_appends(tmp_path):
    path = tmp_path / ROLLOUTS_FILE
    for run, append in ((1, False), (2, True)):
        records: queue.Queue = queue.Queue()
        with RolloutRecordWriter(records, path, append=append, poll_s=0.05):
            records.put({"run": run})
    assert _lines(path) == [{"run": 1}, {"run": 2}]


def test_an_odd_value_costs_nothing_and_a_broken_file_does_not_stall_the_queue(tmp_path):
    path = tmp_path / ROLLOUTS_FILE
    records: queue.Queue = queue.Queue()
    with RolloutRecordWriter(records, path, append=False, poll_s=0.05) as writer:
        records.put({"details": {"path": Path("/x")}})
    assert _lines(path) == [{"details": {"path": "/x"}}]

    circular: dict = {}
    circular["self"] = circular
    records = queue.Queue()
    with RolloutRecordWriter(records, path, append=True, poll_s=0.05) as writer:
        records.put(circular)
        records.put({"after": 1})
    assert writer.dropped == 1 and _lines(path)[-1] == {"after": 1}  # one bad record, not the rest of the run

    records = queue.Queue()
    writer = RolloutRecordWriter(records, "/dev/full", append=True, poll_s=0.05).start()  # a full disk
    for i in range(3):
        records.put({"i": i})
    writer.close(timeout_s=10)
    assert isinstance(writer.error, OSError) and writer.dropped == 3 and writer.written == 0
    assert records.empty()  # still drained: the unbounded queue must not grow for the rest of the run


# -- the checkpoint pieces ---------------------------------------------------------------------------------------


class _Worker:
    def __init__(self):
        self.state = {"scheduler": {"position": 5}, "counters": {"rollouts": 9}}
        self.version = None
        self.loaded = None

    def state_dict(self):
        return self.state

    def load_state_dict(self, state):
        self.loaded = state

    def update_model_version(self, version):
        self.version = version


def test_the_policy_version_rides_along_and_continues_on_resume(tmp_path):
    from trainer.weight_transfer import LocalEngineWeightTransfer

    trainer = SimpleNamespace(model_version=7)
    callback = WorkerStateCallback(_Worker(), model_version_fn=lambda: trainer.model_version)
    callback.on_save(SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=2,
                                                                                is_world_process_zero=True), None)
    checkpoint = tmp_path / "checkpoint-2"
    assert json.loads((checkpoint / WORKER_STATE_FILE).read_text())["model_version"] == 7

    worker, resumed = _Worker(), SimpleNamespace(model_version=0)
    transfer = LocalEngineWeightTransfer("http://127.0.0.1:9")  # never contacted here
    assert load_worker_state(worker, str(checkpoint))
    assert worker.loaded["scheduler"] == {"position": 5}
    assert restore_model_version(resumed, worker, transfer, str(checkpoint)) == 7
    assert (resumed.model_version, worker.version, transfer.version) == (7, 7, 7)
    # No checkpoint, or one written before the version was saved: TRL's own count from 0 stands.
    assert restore_model_version(resumed, worker, transfer, None) is None
    (checkpoint / WORKER_STATE_FILE).write_text(json.dumps({"scheduler": {}}))
    assert restore_model_version(SimpleNamespace(model_version=0), worker, transfer, str(checkpoint)) is None


def test_the_training_worker_is_built_by_the_rollouts_factory(tmp_path):
    """`train` maps agent, sandbox and reward names through `rollout_worker.factory`, like `rollouts` does."""
    from trainer.components import build_rollout_worker
    from trainer.config import parse_train_args
    from trainer.train_swe_async_grpo import resolve_model_path

    script, training = parse_train_args(["--preset", "cpu-demo", "--agent", "single-shot", "--reward-mode", "fraction",
                                         "--agent-wall-time-s", "42", "--output-dir", str(tmp_path)])
    worker = build_rollout_worker(script, training, model_path=resolve_model_path(script.model_name_or_path),
                                  engine_url="http://127.0.0.1:9", keep_trajectories=True)
    runner = worker.episode_runner
    assert runner.agent.name == "single-shot"
    assert runner.grader.config.reward_mode == "fraction"
    assert runner.config.agent_wall_time_s == 42.0
    assert worker.config.keep_trajectories and worker.config.seed == training.seed
    assert "{%" in worker.chat_template and len(worker.tasks) == len(load_tasks("embedded"))  # the training template


# -- stop after 2 steps, resume to 4: the real CLI --------------------------------------------------------------

FAST = ["--preset", "cpu-demo", "--tasks", "embedded", "--agent", "single-shot", "--reward-mode", "fraction",
        "--max-tokens-per-turn", "4", "--max-completion-length", "4", "--max-turns", "1", "--num-generations", "2",
        "--per-device-train-batch-size", "2", "--report-to", "none", "--save-steps", "2", "--seed", "5"]


def _train(out: Path, tmp: Path, marker: str, extra: list[str]) -> tuple[str, float]:
    argv = [sys.executable, "-m", "intercept_rl_cli", "train", *FAST, "--output-dir", str(out), *extra]
    env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "HF_HUB_OFFLINE": "1", "RESUME_TEST_MARKER": marker,
           "TMPDIR": str(tmp)}  # the run's sandboxes and grading dirs land here, so leftovers are visible
    env.pop("TRACKIO_DIR", None)
    started = time.monotonic()
    code, output = run_to_end(argv, cwd=REPO, env=env, timeout=600)
    elapsed = time.monotonic() - started
    leftovers = processes_with_marker(f"RESUME_TEST_MARKER={marker}")
    for pid in leftovers:  # clean up before failing, so a failure does not leak into other tests
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    assert code == 0, output[-6000:]
    assert leftovers == set(), f"the run left processes behind (engine, agents or sandboxes): {leftovers}"
    # The sandbox registry's state dir stays (a later run reaps orphans from it), empty; nothing else may remain.
    state_dir = tmp / f"intercept-rl-{os.getuid()}"
    assert [p.name for p in tmp.iterdir() if p != state_dir] == [], "the run left grading or engine files behind"
    assert not state_dir.exists() or list(state_dir.iterdir()) == [], "the run left sandbox directories behind"
    return output, elapsed


def _progress_steps(output: str) -> list[int]:
    lines = [line for line in output.splitlines() if line.startswith("[intercept-rl] step ")]
    return [int(line.split()[2].split("/")[0]) for line in lines]


def _logged_steps(checkpoint: Path) -> list[dict]:
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return [entry for entry in history if "loss" in entry]


def _groups(records: list[dict]) -> dict[int, str]:
    """group id → task id, checking each recorded group is whole (both members, one task)."""
    members: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        members[record["group_id"]].append(record)
    for group_id, rows in members.items():
        assert sorted(r["group_index"] for r in rows) == [0, 1], f"group {group_id} is not whole"
        assert len({r["task_id"] for r in rows}) == 1
    return {group_id: rows[0]["task_id"] for group_id, rows in sorted(members.items())}


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_stopped_run_resumes_at_the_next_step_with_the_task_order_intact(tmp_path):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    marker = uuid.uuid4().hex
    output1, seconds1 = _train(out, tmp, marker, ["--max-steps", "2"])
    records1 = _lines(out / ROLLOUTS_FILE)
    output2, seconds2 = _train(out, tmp, marker, ["--max-steps", "4", "--resume-from-checkpoint", "latest"])
    records = _lines(out / ROLLOUTS_FILE)
    print(f"resume test: run 1 (2 steps) {seconds1:.0f} s, run 2 (resume, 2 steps) {seconds2:.0f} s; "
          f"{len(records1)} + {len(records) - len(records1)} rollout records")

    # Steps: the first run logs 1, 2; the resumed one starts at 3, and TRL's history carries 1, 2 over.
    assert _progress_steps(output1) == [1, 2]
    assert _progress_steps(output2) == [3, 4]
    ckpt2, ckpt4 = out / "checkpoint-2", out / "checkpoint-4"
    assert [e["step"] for e in _logged_steps(ckpt2)] == [1, 2]
    assert [e["step"] for e in _logged_steps(ckpt4)] == [1, 2, 3, 4]
    assert _logged_steps(ckpt4)[:2] == _logged_steps(ckpt2)

    # The worker state of checkpoint-4 continues checkpoint-2's.
    s2, s4 = (json.loads((c / WORKER_STATE_FILE).read_text()) for c in (ckpt2, ckpt4))
    sched2, sched4 = s2["scheduler"], s4["scheduler"]
    tasks = load_tasks("embedded", split="train", max_tasks=None, seed=5)  # as the run loads them
    n = len(tasks)
    assert sched2["seed"] == sched4["seed"] == 5 and sched2["num_tasks"] == sched4["num_tasks"] == n
    rerun = sched2["unfinished_task_ids"]
    assert sched2["pass"] * n + sched2["position"] == sched2["next_group_id"]  # run 1 took tasks in order only
    run2_started = sched4["next_group_id"] - sched2["next_group_id"]
    assert run2_started > len(rerun)
    # Run 2 first re-ran the groups in flight at the save, then took the next tasks of the same order.
    assert (sched4["pass"] * n + sched4["position"]) - (sched2["pass"] * n + sched2["position"]) == \
        run2_started - len(rerun)
    assert s4["counters"]["groups"] > s2["counters"]["groups"]
    assert s4["counters"]["rollouts"] > s2["counters"]["rollouts"]
    assert s4["model_version"] > s2["model_version"] > 0

    # rollouts.jsonl: run 2 appended; every recorded group ran the task the seeded order gives its group id.
    assert records[: len(records1)] == records1
    records2 = records[len(records1):]
    assert records1 and records2
    fresh = GroupScheduler(tasks, num_generations=2, seed=5)
    seeded = [fresh.next_slot().task.instance_id for _ in range(2 * (sched4["next_group_id"] + 1))][::2]
    groups1, groups2 = _groups(records1), _groups(records2)
    assert all(seeded[g] == task for g, task in groups1.items()), (groups1, seeded)
    assert set(rerun) <= set(seeded[: sched2["next_group_id"]])
    resumed_order = rerun + seeded[sched2["next_group_id"]:]
    assert min(groups2) >= sched2["next_group_id"]
    assert all(resumed_order[g - sched2["next_group_id"]] == task for g, task in groups2.items()), (groups2, rerun)
    # The resumed engine serves the checkpoint's weights under the next version: nothing in run 2 is older.
    assert min(r["model_version"] for r in records2) == s2["model_version"] + 1

    # No task repeats within a pass, apart from the groups in flight at the save, which run 2 re-ran first (checked
    # above: its first group ids ran exactly `rerun`, in order). What run 1 finished after its last save is not in
    # checkpoint-2 and was not trained, so it is not part of the trained timeline. Run 2's other groups take the
    # seeded order up where run 1 left it: logical index = group id - number of re-runs.
    trained = {g: task for g, task in groups1.items() if g < sched2["next_group_id"]}
    trained |= {g - len(rerun): task for g, task in groups2.items() if g >= sched2["next_group_id"] + len(rerun)}
    by_pass: dict[int, list[str]] = defaultdict(list)
    for index, task in sorted(trained.items()):
        by_pass[index // n].append(task)
    for pass_index, pass_tasks in by_pass.items():
        assert len(pass_tasks) == len(set(pass_tasks)), f"a task repeated within pass {pass_index}: {pass_tasks}"
    print(f"resume test: re-run first {rerun}; trained order {[t for _, t in sorted(trained.items())]}")
