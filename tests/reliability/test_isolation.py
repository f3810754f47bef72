"""Isolation, probed from inside a real bubblewrap sandbox of a rollout: nothing but its own endpoint is reachable,
the grading material and the reward are invisible, and the task repository carries no future history.

(tests/rollout_worker/environment/test_sandbox_local.py covers the endpoint, other rollouts' keys and paths, the gate
and host ports and PyPI; this adds the gate's own routes through the relay, the Docker socket, and what the agent can
read.)"""

from __future__ import annotations

import json
import uuid

from tests.support.sandboxes import PROBE


async def test_the_relay_forwards_nothing_but_this_rollouts_own_routes(make_gate, backend, task):  # noqa: F811
    gate = await make_gate()
    mine = await gate.open_rollout("iso-mine")
    sandbox = await backend.create(task, mine.rollout_id, mine.endpoint)
    async with sandbox:
        relay = "http://127.0.0.1:8080"
        probes = {
            "own_models": f"get('{sandbox.endpoint.base_url}/models', os.environ['OPENAI_API_KEY'])",
            "metrics": f"get('{relay}/metrics')",
            "healthz": f"get('{relay}/healthz')",
            "dot_dot": f"get('{relay}/rollout/iso-mine/../iso-other/v1/models', os.environ['OPENAI_API_KEY'])",
            "encoded_dot_dot": f"get('{relay}/rollout/iso-mine/%2e%2e/iso-other/v1/models')",
            "docker_socket": "os.path.exists('/var/run/docker.sock') or os.path.exists('/run/docker.sock')",
        }
        res = await sandbox.exec(["python3", "-c", PROBE, json.dumps(probes)], timeout=60,
                                 env={"OPENAI_API_KEY": sandbox.endpoint.api_key})
        assert res.exit_code == 0, res.stderr
        seen = json.loads(res.stdout)
    assert seen["own_models"] == 200
    assert seen["metrics"] == 403 and seen["healthz"] == 403
    assert seen["dot_dot"] in (403, 404) and seen["encoded_dot_dot"] in (403, 404)
    assert seen["docker_socket"] is False


async def test_grading_material_and_future_history_are_invisible_to_the_agent(backend, task):  # noqa: F811
    """The gold patch and the test patch live only on the host; the repo holds the base commit and nothing after."""
    # Unique markers in the grading material (the fix's own text is too common: third-party code the sandbox binds
    # read-only, e.g. a checkout's agent runtimes under /tmp, contains `return a + b`).
    marker = "gold-" + uuid.uuid4().hex
    task.patch += f"\n# {marker}\n"
    task.test_patch = f"# test-patch {marker}\n"
    async with await backend.create(task, "iso-files") as sandbox:
        log = await sandbox.exec(["git", "log", "--all", "--format=%H"], timeout=30)
        grep = await sandbox.exec(["grep", "-rIl", "--", marker, sandbox.workdir, sandbox.home, "/tmp", "/run"],
                                  timeout=120)
        env = await sandbox.exec(["env"], timeout=30)
    assert log.exit_code == 0 and log.stdout.split() == [task.base_commit]
    assert grep.stdout.strip() == "", grep.stdout  # the grading material is nowhere the agent can read
    assert marker not in env.stdout and "FAIL_TO_PASS" not in env.stdout and "reward" not in env.stdout.lower()
