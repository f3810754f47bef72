"""`intercept-rl rollouts` end to end: real CLI, local engine, bubblewrap sandboxes, scripted agents, host grading.

Real agent CLIs are checked once per sandbox, not here: every agent in bubblewrap at its defaults, token-exact, in
tests/e2e/test_agents_rollouts.py; through this CLI in containers in tests/e2e/test_docker_rollouts.py (pi, embedded
tasks) and tests/e2e/test_docker_synth_rollouts.py (mini-swe-agent, synthesized tasks)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from rollout_worker.environment.tasks import embedded_task_names

pytestmark = pytest.mark.slow


def _rollouts(tmp_path, *args, timeout=900):
    out = tmp_path / "out.jsonl"
    proc = subprocess.run([sys.executable, "-m", "intercept_rl_cli", "rollouts", "--engine", "local", "--quiet",
                           "--out", str(out), *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stderr.strip().splitlines()[-1])["summary"]
    return [json.loads(line) for line in out.read_text().splitlines()], summary


def test_oracle_resolves_every_embedded_task_and_noop_none(tmp_path):
    records, summary = _rollouts(tmp_path, "--agent", "oracle", "--tasks", "embedded", "--max-inflight", "2")
    assert len(records) == len(embedded_task_names()) >= 12
    assert {r["task_id"] for r in records} == {f"embedded__{n}-1" for n in embedded_task_names()} or len(
        {r["task_id"] for r in records}) == len(records)
    assert all(r["reward"] == 1.0 and r["resolved"] and r["scorable"] for r in records)
    assert summary["reward_mean"] == 1.0

    records, summary = _rollouts(tmp_path, "--agent", "noop", "--tasks", "embedded", "--max-inflight", "2")
    assert len(records) == len(embedded_task_names())
    assert all(r["reward"] == 0.0 and not r["resolved"] and r["scorable"] for r in records)
    assert summary["reward_mean"] == 0.0


def test_rollouts_reads_a_nested_config_file(tmp_path):
    """`rollouts --config x.yaml`: the same sections as `train`, flags win over the file."""
    config = tmp_path / "x.yaml"
    config.write_text("tasks: embedded\nmax_tasks: 2\nagent: {name: oracle}\nsandbox: {backend: local}\n"
                      "worker: {num_generations: 2, max_inflight: 1}\ngrading: {reward_mode: fraction}\n")
    records, summary = _rollouts(tmp_path, "--config", str(config), "--max-inflight", "2")
    assert summary["rollouts"] == 4 and len(records) == 4
    assert all(r["reward"] == 1.0 and r["scorable"] for r in records)
    bad = tmp_path / "bad.yaml"
    bad.write_text("worker: {max_turnz: 1}\n")
    proc = subprocess.run([sys.executable, "-m", "intercept_rl_cli", "rollouts", "--config", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown option 'max_turnz'" in proc.stderr


def test_agent_that_rewrites_the_tests_gets_zero(tmp_path):
    # Overwrite every test file with passing stubs: in the agent's own tree the suite now passes.
    cheat = ("cmd:for f in $(find . -path ./.git -prune -o -name 'test_*.py' -print); do "
             "printf 'def test_ok():\\n    assert True\\n' > $f; done; "
             "printf 'import pytest\\n' > conftest.py")
    records, _ = _rollouts(tmp_path, "--agent", cheat, "--tasks", "embedded", "--max-tasks", "3")
    assert len(records) == 3
    assert all(r["scorable"] and r["reward"] == 0.0 for r in records)


def _teacher_forced(model, ids, temperature):
    t = torch.tensor([ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(t).logits[0, :-1].float() / temperature, dim=-1)
    return np.concatenate([[0.0], logp.gather(1, t[0, 1:, None])[:, 0].numpy()])


def _answer_in_patch(patch: str) -> str:
    """The text the agent wrote to answer.txt (a new file), read back exactly from the graded diff."""
    lines = patch.split("\n")
    added = [line[1:] for line in lines if line.startswith("+") and not line.startswith("+++")]
    if not added:
        return ""
    ends_with_newline = "\\ No newline at end of file" not in lines
    return "\n".join(added) + ("\n" if ends_with_newline else "")


def _fraction_reward(text: str) -> float:
    share = sum("a" <= c <= "z" for c in text) / len(text) if text else 0.0
    return sum(share * 100 >= p for p in range(10, 101, 10)) / 10


def test_reply_that_spends_the_token_budget_is_still_acted_on(tmp_path):
    # Every reply spends the whole 4-token budget. The agent must still write it and exit on its own before grading:
    # killing it at the budget raced its write and graded empty answers (reward noise the policy cannot explain).
    records, _ = _rollouts(tmp_path, "--agent", "single-shot", "--tasks", "learning", "--reward-mode", "fraction",
                           "--num-generations", "6", "--max-inflight", "3", "--max-completion-tokens", "4",
                           "--max-tokens-per-turn", "4")
    assert len(records) == 6
    for rec in records:
        assert rec["status"] == "budget" and rec["scorable"], rec["status"]
        assert rec["exit_code"] == 0, rec["agent_output"]  # it exited by itself, nobody killed it
        (row,) = rec["rows"]
        assert sum(row["completion_mask"]) == 4
        answer = _answer_in_patch(rec["details"]["agent_patch"])
        assert f"wrote {len(answer)} characters" in rec["agent_output"], (answer, rec["agent_output"])
        assert rec["reward"] == _fraction_reward(answer), (answer, rec["reward"])
    assert any(_answer_in_patch(r["details"]["agent_patch"]) for r in records)  # the answers were written


def test_agent_idling_after_its_budget_is_stopped_after_the_grace(tmp_path):
    # One call that spends the budget, then the agent hangs: the grace (1 s) ends it long before its wall time.
    hang = ("cmd:python3 -c \"import json,os,urllib.request as u; "
            "r=u.Request(os.environ['OPENAI_BASE_URL']+'/chat/completions', data=json.dumps({'model': "
            "os.environ['OPENAI_MODEL'], 'messages': [{'role': 'user', 'content': 'hi'}]}).encode(), "
            "headers={'Authorization': 'Bearer '+os.environ['OPENAI_API_KEY'], 'Content-Type': 'application/json'}); "
            "u.urlopen(r, timeout=60).read(); print('answered', flush=True)\"; sleep 300")
    records, _ = _rollouts(tmp_path, "--agent", hang, "--tasks", "learning", "--reward-mode", "fraction",
                           "--max-completion-tokens", "3", "--max-tokens-per-turn", "8", "--budget-grace-s", "1",
                           "--agent-wall-time-s", "240", timeout=200)
    (rec,) = records
    assert rec["status"] == "budget" and rec["scorable"]
    assert "answered" in rec["agent_output"]
    assert rec["exit_code"] != 0  # killed, not exited
    assert rec["timings"]["agent"] < 60, rec["timings"]
