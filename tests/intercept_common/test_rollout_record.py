"""`RolloutRecord`: the rollouts.jsonl line as a type, byte-compatible with the files written before it existed."""

import json

from intercept_common.rollout_record import DriftStats, RecordRow, RolloutRecord

# A line of a rollouts.jsonl written before RolloutRecord (runs/bench-off-policy, rows and details cut short).
OLD_LINE = (
    '{"rollout_id": "g0-0-19798eff", "task_id": "learning__lowercase-1", "group_id": 0, "group_index": 0, '
    '"status": "budget", "reward": 0.6, "resolved": false, "scorable": true, "advantage": -0.1072112442883776, '
    '"group_dropped": null, "turns": 1, "rows": [{"input_ids": [151644, 872, 198, 7985, 264, 2421], '
    '"completion_mask": [0, 0, 0, 0, 1, 1], "old_log_probs": [0.0, 0.0, 0.0, 0.0, -0.25, -1.5], '
    '"model_versions": [1]}], "drift": {"forks": 0, "sampled_tokens": 2, "trained_tokens": 2, "parse_failures": 0}, '
    '"model_version": 1, "timings": {"sandbox_setup": 0.9155895209987648, "agent": 2.1152231830019446, '
    '"grading": 4.467034651002905, "total": 7.699813604354858}, "turn_timings": {"engine_s": [0.49021], '
    '"overhead_s": [0.00983]}, "exit_code": 0, "details": {"agent_end": "exit", "agent": "single-shot", '
    '"test_output_tail": "E   assert (0.6 * 100) >= 70\\n\\u05e9", "tests": {"t::a": "passed"}, "grading_s": 4.467}, '
    '"agent_output": "single-shot: wrote 25 characters\\n"}'
)


def test_an_old_line_loads_and_writes_back_byte_for_byte():
    record = RolloutRecord.from_json(json.loads(OLD_LINE))
    assert json.dumps(record.to_json()) == OLD_LINE
    assert record.rows == (RecordRow((151644, 872, 198, 7985, 264, 2421), (0, 0, 0, 0, 1, 1),
                                     (0.0, 0.0, 0.0, 0.0, -0.25, -1.5), (1,)),)
    assert record.drift == DriftStats(forks=0, sampled_tokens=2, trained_tokens=2, parse_failures=0)
    assert record.trained and record.forks == 0 and record.policy_versions == [1] and record.rows[0].sampled == 2
    assert record.extra == {}


def test_a_line_without_drift_or_with_unknown_keys_still_loads():
    line = json.loads(OLD_LINE)
    del line["drift"]
    line["rows"] = line["rows"] * 3
    line["ended_by"] = "budget"  # a key of another version is kept, and written back
    record = RolloutRecord.from_json(line)
    assert record.drift is None and record.forks == 2  # one fork per row after the first
    assert record.extra == {"ended_by": "budget"}
    assert json.dumps(record.to_json()) == json.dumps(line)
    assert not RolloutRecord.from_json({**line, "group_dropped": "zero_variance"}).trained


def test_drift_stats_from_the_worker_counters():
    stats = {"forks": 2.0, "sampled_tokens": 10, "trained_tokens": 7, "turns": 4}
    drift = DriftStats.from_stats(stats)
    assert drift == DriftStats(2, 10, 7, 0) and drift.sampled_not_trained == 3


def test_the_replica_is_kept_and_an_old_line_without_it_round_trips():
    line = json.loads(OLD_LINE)
    assert RolloutRecord.from_json(line).replica is None
    assert json.dumps(RolloutRecord.from_json(line).to_json()) == json.dumps(line)  # no `replica` key added
    record = RolloutRecord.from_json({**line, "replica": "http://gpu1:8000"})
    assert record.replica == "http://gpu1:8000" and record.extra == {}
    assert record.to_json()["replica"] == "http://gpu1:8000"
