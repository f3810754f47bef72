"""Exactness under training (#26) with a real multi-turn agent: the policy samples mini-swe-agent's tool calls, the
agent runs them in bubblewrap, their output comes back as the next turn, and TRL trains it all.

A CI-sized warm start stands in for the full one (`intercept-rl warm-start`, ~25 min): the scripted teacher's
rollouts on one embedded task (its three look variants), through the real agent and gate, and a short supervised
fine-tune of the embedded init on them (`intercept-rl warm-start --tasks embedded:dateranges --steps 120`: the same
code at fewer rows), so the policy emits tool calls that run. Then `intercept-rl train` runs a GRPO step. For every
rollout the run recorded (`rollouts.jsonl`): every sampled token is trained, no tool output is, and `old_log_probs`
equal a teacher-forced float32 forward of the served weights within TOLERANCE. (That later versions' samples match
the weights TRL synced is tests/trainer/test_trainer_fidelity_after_update.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.exactness import check_token_exact
from trainer.warm_start.build import ensure_warm_model
from trainer.warm_start.measure import read_records, summarize

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
TASK = "embedded:dateranges"
SFT_ROWS = 120  # rows of the CI-sized warm start (loss ~0.04)
# At temperature 1 that policy garbled every tool call (0 of 6 turns well-formed); at 0.5: 77 % well-formed, 3 of 4
# rollouts resolved, and it still chooses (between the look variants at least). The engine's logprobs and TRL's loss
# are both at the sampling temperature. (Trained on one teacher rollout only, the policy sampled every token with
# log-prob > -2e-5: the comparison would check almost nothing.)
TEMPERATURE = 0.5
# The issue asks for 1e-5. Measured maxima on three runs (this test; the benchmark at temperature 1.0 and 0.7,
# 1,500-2,200 sampled tokens each): 9.30e-6, 9.30e-6, 9.54e-6, i.e. 39-40 float32 ulps of the log-probs, the float32
# log-softmax over 152k logits summed in another order by the engine's one-position decode than by the full forward
# (against a float64 forward both are ~7e-4 off). So 1e-5 holds but with 2-3 ulps of headroom, and sampling is not
# seeded: the test asserts 2e-5. A misplaced token or mask shows as O(0.1).
TOLERANCE = 2e-5


def test_a_grpo_step_on_multi_turn_tool_calls_is_token_exact(tmp_path):
    from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer

    # Cached like every built model (<cache root>/models/, keyed by recipe, seed, rows and task): built once per
    # machine, ~3 min on 2 cores.
    model = ensure_warm_model(seed=0, steps=SFT_ROWS, tasks=TASK, log=lambda line: None)

    out = tmp_path / "run"
    env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("TRACKIO_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "intercept_rl_cli", "train", "--preset", "mini-swe-warm", "--model-name-or-path",
         str(model), "--tasks", TASK, "--num-generations", "2", "--per-device-train-batch-size", "2",
         "--max-inflight", "2", "--temperature", str(TEMPERATURE), "--max-steps", "1", "--output-dir", str(out),
         "--report-to", "none"], cwd=REPO, env=env, capture_output=True, text=True, timeout=780)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "[intercept-rl] step 1/1" in proc.stdout + proc.stderr

    records = read_records(out / "rollouts.jsonl")
    summary = summarize(records, load_qwen3_tokenizer())
    checked = check_token_exact(records, lambda version: model, tolerance=TOLERANCE, temperature=TEMPERATURE)
    print("\nmulti-turn training exactness:", json.dumps(checked), json.dumps(summary))
    assert checked["versions"] == [1], checked  # the policy's first version: the warm start as served
    assert checked["min_logprob"] < -0.1, checked  # the policy sampled real choices, not certainties
    # real multi-turn rollouts: sampled turns with a tool's output between them, and the policy's own tool calls
    assert checked["multi_turn_rows"] >= 2 and checked["tool_outputs"] >= 2, checked
    assert summary["turns_mean"] >= 2 and summary["tool_call_rate"] > 0, summary
