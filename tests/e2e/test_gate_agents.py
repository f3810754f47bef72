"""The gate against the real, unmodified agents (pi streams, mini-swe-agent does not), with a scripted responder.

Each agent runs one tool call that the gate delivered, sends the tool result back, and exits on our final answer.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest
import yaml

from tests.paths import REPO

PI = REPO / ".agents" / "pi" / "node_modules" / ".bin" / "pi"
MINI = REPO / ".venv-agents" / "bin" / "mini"


async def run_agent(argv, cwd, env, script):
    """Start the agent, run `script()` (the responder) meanwhile, and always reap the process."""
    proc = await asyncio.create_subprocess_exec(*map(str, argv), cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        seen = await script()
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode, out.decode(errors="replace"), seen
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def tool_result_for(messages: list[dict], call_id: str) -> str:
    results = [m for m in messages if m["role"] == "tool" and m["tool_call_id"] == call_id]
    assert len(results) == 1, messages[-3:]
    content = results[0]["content"]
    return content if isinstance(content, str) else "".join(p["text"] for p in content)


@pytest.mark.slow
async def test_real_pi_streams_through_the_gate(make_gate, tmp_path):
    assert PI.exists(), f"pi is not installed at {PI}: run scripts/bootstrap.sh"
    gate = await make_gate(keepalive_interval_s=0.3)
    rollout = await gate.open_rollout("pi-e2e")
    agent_dir, work = tmp_path / "agent", tmp_path / "work"
    agent_dir.mkdir(), work.mkdir()
    (agent_dir / "models.json").write_text(json.dumps({"providers": {"gate": {
        "baseUrl": rollout.base_url, "api": "openai-completions", "apiKey": "GATE_TEST_KEY",
        "compat": {"supportsDeveloperRole": False, "supportsReasoningEffort": False, "supportsStore": False},
        "models": [{"id": "policy", "contextWindow": 32768, "maxTokens": 1024}]}}}))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PI_CODING_AGENT_DIR": str(agent_dir),
           "PI_OFFLINE": "1", "NO_COLOR": "1", "GATE_TEST_KEY": rollout.api_key}

    async def script():
        first = await rollout.next_request(timeout=90)
        await asyncio.sleep(1.0)  # slower than the keep-alive interval: pi must ride out the comments
        await first.reply({"content": "Running it.", "tool_calls": [{"id": "call_pi_1", "function": {
            "name": "bash", "arguments": {"command": "echo gate-ok > marker.txt && cat marker.txt"}}}]},
            finish_reason="tool_calls", usage={"prompt_tokens": 10, "completion_tokens": 5})
        second = await rollout.next_request(timeout=60)
        await second.reply({"content": "All done."}, usage={"prompt_tokens": 20, "completion_tokens": 3})
        return first, second

    code, out, (first, second) = await run_agent([PI, "--provider", "gate", "--model", "policy", "--no-session",
                                                  "-p", "write the marker"], work, env, script)
    assert code == 0, out
    assert "All done." in out
    assert (work / "marker.txt").read_text() == "gate-ok\n"
    assert first.stream and first.include_usage and {t["function"]["name"] for t in first.tools} >= {"bash", "read"}
    assert first.messages[-1]["content"] == [{"type": "text", "text": "write the marker"}]
    # pi echoed our tool call back exactly (content and id) and sent the tool's output
    echoed = second.messages[-2]
    assert echoed["role"] == "assistant" and echoed["tool_calls"][0]["id"] == "call_pi_1"
    assert json.loads(echoed["tool_calls"][0]["function"]["arguments"]) == {
        "command": "echo gate-ok > marker.txt && cat marker.txt"}
    assert tool_result_for(second.messages, "call_pi_1").strip() == "gate-ok"


@pytest.mark.slow
async def test_real_mini_swe_agent_through_the_gate(make_gate, tmp_path):
    assert MINI.exists(), f"mini-swe-agent is not installed at {MINI}: run scripts/bootstrap.sh"
    gate = await make_gate()
    rollout = await gate.open_rollout("mini-e2e")
    state, work = tmp_path / "state", tmp_path / "work"
    state.mkdir(), work.mkdir()
    config = {
        "run": {"task": "write the marker"},
        "agent": {"mode": "yolo", "confirm_exit": False, "step_limit": 5, "cost_limit": 0,
                  "output_path": str(state / "trajectory.json")},
        "model": {"model_name": "openai/policy", "cost_tracking": "ignore_errors",
                  "model_kwargs": {"api_base": rollout.base_url, "drop_params": True}},
        "environment": {"environment_class": "local", "cwd": str(work), "timeout": 30},
    }
    (state / "gate.yaml").write_text(yaml.safe_dump(config))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "OPENAI_API_KEY": rollout.api_key,
           "MSWEA_CONFIGURED": "true", "MSWEA_GLOBAL_CONFIG_DIR": str(state), "MSWEA_COST_TRACKING": "ignore_errors",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PAGER": "cat"}

    def bash(call_id, command):
        return {"content": "THOUGHT: next", "tool_calls": [{"id": call_id, "function": {
            "name": "bash", "arguments": {"command": command}}}]}

    async def script():
        first = await rollout.next_request(timeout=120)
        await first.reply(bash("call_m1", "echo gate-ok > marker.txt && cat marker.txt"), finish_reason="tool_calls")
        second = await rollout.next_request(timeout=60)
        await second.reply(bash("call_m2", "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"), finish_reason="tool_calls")
        return first, second

    code, out, (first, second) = await run_agent(
        [MINI, "--yolo", "--exit-immediately", "-c", "mini.yaml", "-c", state / "gate.yaml"], work, env, script)
    assert code == 0, out[-2000:]
    assert (work / "marker.txt").read_text() == "gate-ok\n"
    assert first.stream is False and [t["function"]["name"] for t in first.tools] == ["bash"]
    # What the product needs: our tool call came back exactly (id, name, arguments) and its output followed.
    # Extra keys litellm adds (`provider_specific_fields`, varying by version) are covered deterministically in
    # test_gate_openai.py, not asserted on a third-party client's serialization here.
    echoed = second.messages[-2]
    assert echoed["role"] == "assistant" and len(echoed["tool_calls"]) == 1
    call = echoed["tool_calls"][0]
    assert call["id"] == "call_m1" and call["function"]["name"] == "bash"
    assert json.loads(call["function"]["arguments"]) == {"command": "echo gate-ok > marker.txt && cat marker.txt"}
    assert "gate-ok" in tool_result_for(second.messages, "call_m1")
