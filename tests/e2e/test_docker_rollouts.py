"""`intercept-rl rollouts --sandbox docker` end to end: the container twin of tests/e2e/test_rollouts_e2e.py (real CLI,
local engine, one container per rollout, real agents through the gate, token-exact rows)."""

import numpy as np
import pytest
import torch

from local_engine.embedded import ensure_tiny_model
from rollout_worker.environment.tasks import embedded_task_names
from tests.e2e.test_rollouts_e2e import _rollouts, _teacher_forced
from tests.support.docker import docker_client_or_skip, sandbox_containers

pytestmark = pytest.mark.slow


@pytest.fixture
def client():
    client = docker_client_or_skip()
    yield client
    # The CLI's process is gone: none of its rollout containers may be left.
    assert [c.name for c in sandbox_containers(client) if c.labels["intercept-rl.sandbox"].startswith("sb-")] == []


# Four of the embedded tasks: every one is checked in bubblewrap (tests/e2e/test_rollouts_e2e.py), and the container
# path is the same for each (all 13 here took 88 s of CI time).
CONTAINER_TASKS = 4


def test_oracle_resolves_embedded_tasks_in_containers_and_noop_none(tmp_path, client):
    records, summary = _rollouts(tmp_path, "--sandbox", "docker", "--agent", "oracle", "--tasks", "embedded",
                                 "--max-tasks", str(CONTAINER_TASKS), "--num-generations", "1", "--max-inflight", "2")
    assert len(records) == CONTAINER_TASKS <= len(embedded_task_names())
    assert all(r["reward"] == 1.0 and r["resolved"] and r["scorable"] for r in records), [
        (r["task_id"], r["status"], r.get("details", {}).get("reason")) for r in records if r["reward"] != 1.0]
    assert summary["reward_mean"] == 1.0
    records, summary = _rollouts(tmp_path, "--sandbox", "docker", "--agent", "noop", "--tasks", "embedded",
                                 "--max-tasks", str(CONTAINER_TASKS), "--num-generations", "1", "--max-inflight", "2")
    assert len(records) == CONTAINER_TASKS
    assert all(r["reward"] == 0.0 and r["scorable"] for r in records) and summary["reward_mean"] == 0.0


# One agent here and the other on the synthesized tasks (tests/e2e/test_docker_synth_rollouts.py): the container path
# is the same for both kinds of task image, and each agent costs 40-130 s a run on this machine.
@pytest.mark.parametrize("agent", ["pi"])
def test_real_agents_in_containers_are_token_exact(tmp_path, client, agent):
    from transformers import AutoModelForCausalLM

    records, summary = _rollouts(tmp_path, "--sandbox", "docker", "--agent", agent, "--tasks", "embedded",
                                 "--max-tasks", "1", "--num-generations", "2", "--max-turns", "3",
                                 "--max-tokens-per-turn", "24", "--temperature", "1.0", "--agent-wall-time-s", "240")
    assert summary["rollouts"] == 2
    model = AutoModelForCausalLM.from_pretrained(ensure_tiny_model(), dtype=torch.float32).eval()
    for rec in records:
        assert rec["status"] in ("completed", "budget", "agent_error"), rec["status"]
        assert rec["turns"] >= 1, rec["agent_output"][-2000:]  # the agent in the container reached the gate
        drift = rec["drift"]
        assert drift["sampled_tokens"] > 0 and drift["trained_tokens"] == drift["sampled_tokens"], drift
        for row in rec["rows"]:
            mask = np.array(row["completion_mask"], dtype=bool)
            ref = _teacher_forced(model, row["input_ids"], 1.0)
            assert np.abs(np.array(row["old_log_probs"])[mask] - ref[mask]).max() < 1e-5
