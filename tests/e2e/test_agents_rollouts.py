"""Real rollouts of every agent CLI against the local engine on the embedded 64k-position model (slow), at their
defaults: the gate as users get it (`GateConfig()`), so each launcher's own `report_truncation` decides how a turn the
token limit cut is reported (issue #29).

Each agent runs unmodified in a bubblewrap sandbox, through the real gate in its own dialect, answered by the real
worker (token-exact prompt assembly, TRL's parser) and the local engine; the trajectory is graded host-side. Turns are
24 tokens, so the random model's replies are cut: no rollout may end as agent_error (codex exited 1 and claude-code
gave up after 4 cut turns when every cut was reported). Checked: every sampled token is trained, and `old_log_probs`
equal a teacher-forced forward of the same model within 1e-5. The random model never emits a parseable tool call, so
each agent ends after its first turn; no agent may open a side conversation (qwen-code's memory subagent did, one fork
per episode, until its launcher turned it off). Measured and printed: the agent's first prompt in tokens (system
prompt + tool schemas + task, rendered by the training template) and the engine's time for it.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer
from local_engine.embedded import LONG_CONTEXT_POSITIONS, ensure_tiny_model
from rollout_worker.config import WorkerConfig
from rollout_worker.environment.episode import EpisodeConfig
from rollout_worker.factory import EpisodeOptions, build_episode_runner
from rollout_worker.serving.chat_template import resolve_training_template
from rollout_worker.worker import RolloutWorker
from tests.support.exactness import teacher_forced_at
from tests.support.sandboxes import make_task

pytestmark = pytest.mark.slow
TEMPERATURE = 1.0


@pytest.fixture(scope="module")
def long_model_dir():
    return ensure_tiny_model(long_context=True)


@pytest.fixture(scope="module")
def engine(long_model_dir):
    from intercept_common.engine_process import LocalEngineProcess

    with LocalEngineProcess(str(long_model_dir), served_model_name="policy",
                            max_model_len=LONG_CONTEXT_POSITIONS) as proc:
        yield proc


@pytest.fixture(scope="module")
def model(long_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(long_model_dir, dtype=torch.float32).eval()


def test_long_variant_has_the_default_weights(long_model_dir):
    from safetensors.torch import load_file

    short = ensure_tiny_model()
    assert json.loads((long_model_dir / "config.json").read_text())["max_position_embeddings"] == 65536
    a, b = load_file(long_model_dir / "model.safetensors"), load_file(short / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def run_agent_rollouts(agent: str, engine_url: str, tmp_path, n: int = 2) -> list[dict]:
    from tests.rollout_worker.test_worker import _drain

    tokenizer = load_qwen3_tokenizer()
    config = WorkerConfig(served_model_name="policy", num_generations=n, max_inflight=1, max_groups=1,
                          temperature=TEMPERATURE, max_tokens_per_turn=24, max_turns=3, seed=0,
                          keep_trajectories=True)
    runner = build_episode_runner(EpisodeOptions(agent=agent), EpisodeConfig(agent_wall_time_s=240))
    worker = RolloutWorker(config, tasks=[make_task(tmp_path)], episode_runner=runner, tokenizer=tokenizer,
                           chat_template=resolve_training_template(tokenizer), engine_url=engine_url)
    worker.start()
    try:
        _, records = _drain(worker, 1, timeout=900)
    finally:
        worker.stop()
    return records


def cut_turns(row: dict, turn_end: int, max_tokens: int) -> int:
    """Sampled turns of a row (runs of its completion mask) that are `max_tokens` long and do not end the turn."""
    mask, ids = row["completion_mask"], row["input_ids"]
    cuts, start = 0, None
    for i, m in enumerate([*mask, 0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            cuts += i - start == max_tokens and ids[i - 1] != turn_end
            start = None
    return cuts


# mini-swe-agent rewrites its history after a reply without a tool call (docs/agents.md): it forks by design.
FORKING = {"mini-swe-agent"}


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("agent", ["qwen-code", "opencode", "claude-code", "codex", "gemini-cli", "pi",
                                   "mini-swe-agent"])
def test_real_agent_rollouts_at_defaults_are_token_exact(agent, engine, model, tmp_path):
    started = time.monotonic()
    records = run_agent_rollouts(agent, engine.url, tmp_path)
    turn_end = load_qwen3_tokenizer().convert_tokens_to_ids("<|im_end|>")
    assert len(records) == 2
    first_prompts = []
    for rec in records:
        # "completed": the agent itself ended its episode (a CLI that keeps asking again after cut turns would run
        # into the turn budget, "budget"; one that gives up would be "agent_error")
        assert rec["status"] == "completed", (rec["status"], rec["agent_output"][-3000:])
        assert rec["scorable"] and rec["turns"] >= 1, rec["agent_output"][-3000:]
        assert sum(cut_turns(row, turn_end, 24) for row in rec["rows"]) >= 1  # the token limit did cut a turn
        drift = rec["drift"]
        assert drift["sampled_tokens"] > 0, drift
        if agent not in FORKING:
            assert drift["forks"] == 0 and len(rec["rows"]) == 1, drift
        assert drift["trained_tokens"] == drift["sampled_tokens"], drift  # 100 % of sampled tokens trained
        for row in rec["rows"]:
            mask = np.array(row["completion_mask"], dtype=bool)
            ref = teacher_forced_at(model, row["input_ids"], mask, TEMPERATURE)
            got = np.array(row["old_log_probs"])
            assert np.abs(got[mask] - ref[mask]).max() < 1e-5
            assert np.all(got[~mask] == 0.0)
        first_prompts.append(int(np.argmax(np.array(rec["rows"][0]["completion_mask"]))))
    print(f"\n{agent}: first prompt {first_prompts} tokens; turns {[r['turns'] for r in records]}; "
          f"forks {[r['drift']['forks'] for r in records]}; sampled {[r['drift']['sampled_tokens'] for r in records]};"
          f" status {[r['status'] for r in records]}; {time.monotonic() - started:.0f} s for 2 rollouts")
