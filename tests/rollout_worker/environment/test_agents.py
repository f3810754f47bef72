"""Agent launchers: specs, the commands and config they produce, and the real agents (pi, mini-swe-agent),
unmodified, inside the local sandbox, talking to the real gate answered by a scripted responder."""

from __future__ import annotations

import json

import pytest
import yaml

from intercept_common.install_paths import agents_venv, pi_prefix
from rollout_worker.environment.agents import (
    AgentUnavailableError,
    CommandAgent,
    MiniSweAgentLauncher,
    NoopAgent,
    OracleAgent,
    PiLauncher,
    get_agent,
)
from rollout_worker.types import RolloutEndpoint

ENDPOINT = RolloutEndpoint("r-1", "http://127.0.0.1:8080/rollout/r-1/v1", "irl-secret-key", "policy")


class _FakeSandbox:
    """Only the two paths launchers read (prepare is pure)."""

    workdir = "/testbed"
    home = "/home/agent"


def test_get_agent_specs():
    assert isinstance(get_agent("mini-swe-agent"), MiniSweAgentLauncher)
    assert isinstance(get_agent("mini"), MiniSweAgentLauncher)
    assert isinstance(get_agent("pi"), PiLauncher)
    assert isinstance(get_agent("oracle"), OracleAgent) and isinstance(get_agent("noop"), NoopAgent)
    agent = get_agent("cmd:qwen --yolo -p \"$(cat $TASK_FILE)\"")
    assert isinstance(agent, CommandAgent) and agent.command == 'qwen --yolo -p "$(cat $TASK_FILE)"'
    with pytest.raises(ValueError, match="unknown agent 'claude'"):
        get_agent("claude")
    with pytest.raises(ValueError, match="needs a shell command"):
        get_agent("cmd:  ")


def _no_secret_outside_env(command, key):
    assert all(key not in arg for arg in command.argv)
    assert all(key.encode() not in data for data in command.files.values())
    assert key not in repr(command)


def test_mini_command_config_and_env(task):
    command = MiniSweAgentLauncher(step_limit=7).prepare(_FakeSandbox(), ENDPOINT, task)
    assert command.argv[0] == str(agents_venv() / "bin" / "mini")
    assert {"--yolo", "--exit-immediately"} <= set(command.argv)
    [config_path] = command.files
    assert command.argv[-2:] == ["-c", config_path] and config_path.startswith("/home/agent/")
    config = yaml.safe_load(command.files[config_path])
    assert config["run"]["task"] == task.problem_statement
    assert config["model"]["model_name"] == "openai/policy"
    assert config["model"]["model_kwargs"]["api_base"] == ENDPOINT.base_url
    assert config["agent"]["step_limit"] == 7 and config["agent"]["mode"] == "yolo"
    assert config["environment"]["cwd"] == "/testbed"
    assert command.env["OPENAI_API_KEY"] == ENDPOINT.api_key
    assert command.env["MSWEA_CONFIGURED"] == "true" and command.env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert command.env["MSWEA_GLOBAL_CONFIG_DIR"].startswith("/home/agent/")
    _no_secret_outside_env(command, ENDPOINT.api_key)


def test_pi_command_models_json_and_env(task):
    command = PiLauncher().prepare(_FakeSandbox(), ENDPOINT, task)
    assert command.argv[1:7] == ["--provider", "intercept", "--model", "policy", "--no-session", "-p"]
    assert command.argv[-1] == task.problem_statement
    models = json.loads(command.files["/home/agent/.pi/agent/models.json"])
    provider = models["providers"]["intercept"]
    assert provider["api"] == "openai-completions" and provider["baseUrl"] == ENDPOINT.base_url
    assert command.env[provider["apiKey"]] == ENDPOINT.api_key  # models.json names the variable, not the key
    assert command.env["PI_OFFLINE"] == "1" and command.env["PI_CODING_AGENT_DIR"] == "/home/agent/.pi/agent"
    _no_secret_outside_env(command, ENDPOINT.api_key)


def test_cmd_oracle_noop_commands(task):
    cmd = CommandAgent("my-agent").prepare(_FakeSandbox(), ENDPOINT, task)
    assert cmd.argv == ["/bin/sh", "-c", "my-agent"]
    assert {cmd.env[k] for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL")} == {
        ENDPOINT.base_url, ENDPOINT.api_key, "policy"}
    assert cmd.files[cmd.env["TASK_FILE"]] == task.problem_statement.encode()
    oracle = OracleAgent().prepare(_FakeSandbox(), ENDPOINT, task)
    assert list(oracle.files.values()) == [task.patch.encode()] and "OPENAI_API_KEY" not in oracle.env
    assert NoopAgent().prepare(_FakeSandbox(), ENDPOINT, task).argv == ["true"]
    with pytest.raises(ValueError, match="no gold patch"):
        OracleAgent().prepare(_FakeSandbox(), ENDPOINT, type(task)(**{**task.__dict__, "patch": ""}))


def test_missing_install_is_a_clear_error(task, tmp_path):
    with pytest.raises(AgentUnavailableError, match="bootstrap"):
        MiniSweAgentLauncher(venv=tmp_path).prepare(_FakeSandbox(), ENDPOINT, task)
    with pytest.raises(AgentUnavailableError, match="bootstrap"):
        PiLauncher(prefix=tmp_path).prepare(_FakeSandbox(), ENDPOINT, task)


def _bash_call(call_id: str, command: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": "bash", "arguments": json.dumps({"command": command})}}


async def _run_real_agent(launcher, rollout, backend, task, script):
    """Start the agent in a sandbox; answer each call with the next scripted reply; return (requests, proc, sb)."""
    seen = []
    sb = await backend.create(task, rollout.rollout_id, rollout.endpoint)
    async with sb:
        command = launcher.prepare(sb, sb.endpoint, task)
        for path, data in command.files.items():
            await sb.write_file(path, data)
        proc = await sb.start(command.argv, command.env, command.cwd)
        try:
            for message, finish in script:
                request = await rollout.next_request(timeout=120)
                seen.append(request)
                assert await request.reply(message, finish_reason=finish,
                                           usage={"prompt_tokens": 10, "completion_tokens": 5})
            code = await proc.wait(120)
            assert code is not None, "agent did not exit: " + proc.output_tail()
            edited = (sb.host_workdir / "hello.txt").read_text() if (sb.host_workdir / "hello.txt").exists() else None
        finally:
            await sb.kill()
    return seen, proc, edited


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_real_mini_swe_agent_in_sandbox(make_gate, backend, task):
    if not (agents_venv() / "bin" / "mini").exists():
        pytest.fail("mini-swe-agent is not installed: run scripts/bootstrap.sh")
    gate = await make_gate()
    rollout = await gate.open_rollout("r-mini")
    script = [
        ({"role": "assistant", "content": "Look first.", "tool_calls": [_bash_call("c1", "echo hi > hello.txt && cat calc.py")]}, "tool_calls"),
        ({"role": "assistant", "content": "Done.", "tool_calls": [_bash_call("c2", "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT")]}, "tool_calls"),
    ]
    seen, proc, edited = await _run_real_agent(MiniSweAgentLauncher(), rollout, backend, task, script)
    assert proc.returncode == 0, proc.output_tail()
    assert edited == "hi\n"
    first, second = seen
    assert not first.stream and [t["function"]["name"] for t in first.tools] == ["bash"]
    assert first.messages[0]["role"] == "system" and task.problem_statement in first.messages[1]["content"]
    tool_results = [m for m in second.messages if m["role"] == "tool"]
    assert tool_results and "return a - b" in tool_results[-1]["content"]
    assert second.messages[len(first.messages)]["tool_calls"][0]["id"] == "c1"  # our answer echoed back
    await rollout.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_real_pi_in_sandbox(make_gate, backend, task):
    if not (pi_prefix() / "node_modules" / ".bin" / "pi").exists():
        pytest.fail("pi is not installed: run scripts/bootstrap.sh")
    gate = await make_gate()
    rollout = await gate.open_rollout("r-pi")
    script = [
        ({"role": "assistant", "content": None, "tool_calls": [_bash_call("c1", "echo hi > hello.txt && cat calc.py")]}, "tool_calls"),
        ({"role": "assistant", "content": "All done: the file is written."}, "stop"),
    ]
    seen, proc, edited = await _run_real_agent(PiLauncher(), rollout, backend, task, script)
    assert proc.returncode == 0, proc.output_tail()
    assert edited == "hi\n"
    assert "All done: the file is written." in proc.output_tail()
    first, second = seen
    assert first.stream and first.include_usage
    assert {t["function"]["name"] for t in first.tools} >= {"bash", "read", "edit", "write"}
    tool_results = [m for m in second.messages if m["role"] == "tool"]
    assert tool_results and "return a - b" in json.dumps(tool_results[-1]["content"])
    await rollout.close()
