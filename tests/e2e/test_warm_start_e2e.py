"""The warm start (#26) through real parts (long: `make test-long`): the real mini-swe-agent in bubblewrap, the real gate, worker, host
grading and local engine.

- The scripted teacher's rollouts resolve the embedded tasks in 3 turns with 0 forks: the warm-start data is what
  the agent really sends.
- The warm-started policy's multi-turn rollouts are token-exact: `old_log_probs` equal a teacher-forced forward of
  the served weights within 5e-5 (not the issue's 1e-5: on this trained model float32 op order alone gave 1.5e-5,
  see check_token_exact), every sampled token is trained, and tool outputs (inside `<tool_response>`) are never
  trained.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.exactness import check_token_exact
from trainer.warm_start.build import record_teacher_rollouts
from trainer.warm_start.measure import read_records

# Several minutes each on 2 cores, and the second needs the warm model (~30 min to build on a fresh machine): `make
# test-long`, outside CI, until issue #26 is done.
pytestmark = [pytest.mark.slow, pytest.mark.long]
TEMPERATURE = 1.0


def test_teacher_rollouts_resolve_every_task_in_three_turns_without_forks(tmp_path):
    out = tmp_path / "teacher.jsonl"
    summary = record_teacher_rollouts(out, generations=1, log=lambda line: None)
    records = read_records(out)
    assert len(records) == summary["rollouts"] == 13
    assert summary["solve_rate"] == 1.0 and summary["turns_mean"] == 3.0, summary
    assert summary["forks"] == 0 and summary["parse_failures"] == 0 and summary["tool_call_rate"] == 1.0, summary
    assert all(len(r["rows"]) == 1 for r in records)


@pytest.mark.timeout(1800)
def test_warm_policy_multi_turn_rollouts_are_token_exact(tmp_path):
    from trainer.warm_start.build import ensure_warm_model

    model_dir = ensure_warm_model()
    out = tmp_path / "warm.jsonl"
    proc = subprocess.run([sys.executable, "-m", "intercept_rl_cli", "rollouts", "--model", str(model_dir),
                           "--agent", "mini-swe-agent", "--tasks", "embedded", "--max-tasks", "3",
                           "--num-generations", "1", "--max-inflight", "2", "--max-turns", "5",
                           "--max-tokens-per-turn", "512", "--temperature", str(TEMPERATURE), "--quiet",
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_records(out)
    assert len(records) == 3
    # float32 op order: the engine's KV-cached decode vs one full forward. Measured up to 1.5e-5 on 512-token turns
    # of the v1 warm model (both ~6e-4 from a float64 forward); a misplaced token or mask is O(0.1).
    checked = check_token_exact(records, lambda version: model_dir, tolerance=5e-5, temperature=TEMPERATURE)
    # multi-turn: at least one row holds two sampled turns with a real tool output between them
    assert checked["multi_turn_rows"] >= 1 and checked["tool_outputs"] >= 1, checked
    print("\nwarm policy exactness:", json.dumps(checked))
