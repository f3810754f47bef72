"""The gate through the real `openai` SDK: sync and async, streaming and not, tool calls, usage, real agent shapes."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from control_plane import GateConfig, RolloutClosed
from tests.support.background_gate import BackgroundGate

LONG_TEXT = "I will inspect the repository first. " * 5  # > stream_chunk_chars: content arrives in several deltas
ARGS_BASH = json.dumps({"command": "ls -la && grep -rn 'def main' src/ | head -50", "timeout": 30})
TOOL_REPLY = {
    "role": "assistant",
    "content": LONG_TEXT,
    "tool_calls": [
        {"id": "call_abc123", "type": "function", "function": {"name": "bash", "arguments": ARGS_BASH}},
        {"id": "toolu_02XyZ", "type": "function", "function": {"name": "read", "arguments": '{"path":"a/b.py"}'}},
    ],
}
USAGE = {"prompt_tokens": 123, "completion_tokens": 45}
TOOLS = [
    {"type": "function", "function": {"name": "bash", "description": "run a command",
                                      "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "read", "parameters": {"type": "object", "properties": {}}}},
]
MESSAGES = [{"role": "system", "content": "You are a coding agent."}, {"role": "user", "content": "Fix the bug."}]


async def answer_one(rollout, message, finish_reason, usage=None, timeout=5.0):
    """Worker side: take the next request, answer it, and return it for inspection."""
    req = await rollout.next_request(timeout=timeout)
    assert await req.reply(message, finish_reason=finish_reason, usage=usage)
    return req


def async_client(rollout) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=rollout.base_url, api_key=rollout.api_key, max_retries=0, timeout=10)


def reassemble(chunks) -> tuple[dict, str | None, object]:
    """Rebuild the assistant message from streamed chunks, the way an agent does."""
    content, tool_calls, finish, usage, roles = "", {}, None, None, []
    for chunk in chunks:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            if delta.role:
                roles.append(delta.role)
            content += delta.content or ""
            for call in delta.tool_calls or []:
                slot = tool_calls.setdefault(call.index, {"id": None, "type": None, "name": "", "arguments": ""})
                slot["id"] = call.id or slot["id"]
                slot["type"] = call.type or slot["type"]
                if call.function is not None:
                    slot["name"] += call.function.name or ""
                    slot["arguments"] += call.function.arguments or ""
            finish = choice.finish_reason or finish
    assert roles == ["assistant"]
    message = {
        "role": "assistant",
        "content": content,
        "tool_calls": [
            {"id": c["id"], "type": c["type"], "function": {"name": c["name"], "arguments": c["arguments"]}}
            for _, c in sorted(tool_calls.items())
        ],
    }
    return message, finish, usage


async def test_async_non_streaming_tool_calls_arrive_exactly(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = async_client(rollout)
    worker = asyncio.create_task(answer_one(rollout, TOOL_REPLY, "tool_calls", USAGE))
    result = await client.chat.completions.create(
        model="whatever-the-agent-says", messages=MESSAGES, tools=TOOLS, temperature=0.7, top_p=0.9,
        max_tokens=256, seed=7, stop=["</done>"],
    )
    req = await worker
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == LONG_TEXT
    got = [(c.id, c.type, c.function.name, c.function.arguments) for c in choice.message.tool_calls]
    want = [(c["id"], "function", c["function"]["name"], c["function"]["arguments"]) for c in TOOL_REPLY["tool_calls"]]
    assert got == want
    assert result.id.startswith("chatcmpl-") and result.id == req.id
    assert result.object == "chat.completion" and result.model == "policy"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (123, 45, 168)
    # the worker saw the request as sent
    assert req.messages == MESSAGES and req.tools == TOOLS and req.stream is False
    assert req.params == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 256, "seed": 7, "stop": ["</done>"]}
    assert req.raw["model"] == "whatever-the-agent-says"
    await client.close()


@pytest.mark.parametrize("include_usage", [True, False])
async def test_async_streaming_deltas_reassemble(make_gate, include_usage):
    gate = await make_gate(stream_chunk_chars=16)
    rollout = await gate.open_rollout("r1")
    client = async_client(rollout)
    worker = asyncio.create_task(answer_one(rollout, TOOL_REPLY, "tool_calls", USAGE))
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = await client.chat.completions.create(model="policy", messages=MESSAGES, tools=TOOLS, stream=True,
                                                  **extra)
    chunks = [chunk async for chunk in stream]
    req = await worker
    assert req.stream is True and req.include_usage is include_usage
    message, finish, usage = reassemble(chunks)
    assert message == TOOL_REPLY
    assert finish == "tool_calls"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= len(LONG_TEXT) // 16
    assert all(c.id == req.id for c in chunks)
    if include_usage:
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (123, 45, 168)
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
    else:
        assert usage is None
    await client.close()


async def test_plain_text_reply_streams_with_stop(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = async_client(rollout)
    worker = asyncio.create_task(answer_one(rollout, {"role": "assistant", "content": "done ✓ — ok"}, "stop"))
    stream = await client.chat.completions.create(model="policy", messages=MESSAGES, stream=True)
    message, finish, _ = reassemble([c async for c in stream])
    await worker
    assert message == {"role": "assistant", "content": "done ✓ — ok", "tool_calls": []}
    assert finish == "stop"
    await client.close()


async def test_reply_normalizes_dict_arguments_and_missing_ids_and_passes_reasoning(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = async_client(rollout)
    reply = {"role": "assistant", "content": None, "reasoning_content": "think about it",
             "tool_calls": [{"function": {"name": "bash", "arguments": {"command": "pwd"}}}]}
    worker = asyncio.create_task(answer_one(rollout, reply, "tool_calls"))
    result = await client.chat.completions.create(model="policy", messages=MESSAGES, tools=TOOLS)
    await worker
    message = result.choices[0].message
    assert message.content is None
    assert json.loads(message.tool_calls[0].function.arguments) == {"command": "pwd"}
    assert message.tool_calls[0].id.startswith("call_")
    assert message.model_extra["reasoning_content"] == "think about it"
    await client.close()


async def test_length_finish_and_worker_failure_reach_the_sdk(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = async_client(rollout)
    worker = asyncio.create_task(answer_one(rollout, {"role": "assistant", "content": "trunc"}, "length"))
    result = await client.chat.completions.create(model="policy", messages=MESSAGES)
    await worker
    assert result.choices[0].finish_reason == "length"

    async def fail_next():
        req = await rollout.next_request(timeout=5)
        assert await req.fail(400, "prompt too long", code="context_length_exceeded")
        assert not await req.reply({"content": "late"})  # already answered: a no-op

    for stream in (False, True):
        worker = asyncio.create_task(fail_next())
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="policy", messages=MESSAGES, stream=stream)
        await worker
        assert info.value.code == "context_length_exceeded" and "prompt too long" in info.value.message
    await client.close()


async def test_models_and_cross_rollout_keys(make_gate):
    gate = await make_gate()
    a = await gate.open_rollout("a")
    b = await gate.open_rollout("b")
    assert a.api_key != b.api_key and "a" != a.api_key
    client_a = async_client(a)
    assert [m.id for m in (await client_a.models.list()).data] == ["policy"]
    a_key_on_b = openai.AsyncOpenAI(base_url=b.base_url, api_key=a.api_key, max_retries=0, timeout=5)
    with pytest.raises(openai.AuthenticationError):
        await a_key_on_b.chat.completions.create(model="policy", messages=MESSAGES)
    with pytest.raises(openai.AuthenticationError):
        await a_key_on_b.models.list()
    assert b.pending == 0  # the rejected call never reached b's queue
    await a.close()
    with pytest.raises(openai.NotFoundError):
        await client_a.chat.completions.create(model="policy", messages=MESSAGES)
    with pytest.raises(RolloutClosed):
        await a.next_request(timeout=1)
    await client_a.close()
    await a_key_on_b.close()


async def test_what_pi_sends(make_gate):
    """pi 0.73: always streams with include_usage, user content as text parts, `content: null` on tool-call turns."""
    gate = await make_gate()
    rollout = await gate.open_rollout("pi-1")
    client = async_client(rollout)
    messages = [
        {"role": "system", "content": "You are an expert coding assistant."},
        {"role": "user", "content": [{"type": "text", "text": "Fix the failing test in calc.py"}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "bash", "arguments": "{\"command\":\"cat calc.py\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "def add(a, b):\n    return a - b\n"},
    ]
    worker = asyncio.create_task(answer_one(rollout, TOOL_REPLY, "tool_calls", USAGE))
    stream = await client.chat.completions.create(
        model="policy", messages=messages, tools=TOOLS, stream=True, stream_options={"include_usage": True},
        max_completion_tokens=1024, extra_body={"store": False},
    )
    message, finish, usage = reassemble([c async for c in stream])
    req = await worker
    assert req.messages == messages and req.params == {"max_completion_tokens": 1024}
    assert message == TOOL_REPLY and finish == "tool_calls" and usage.total_tokens == 168
    await client.close()


async def test_what_mini_swe_agent_sends(make_gate):
    """mini-swe-agent 2.4 (litellm): non-streaming, one bash tool, `provider_specific_fields` on assistant turns."""
    gate = await make_gate()
    rollout = await gate.open_rollout("mini-1")
    client = async_client(rollout)
    messages = [
        {"role": "system", "content": "You are a helpful assistant that can interact with a computer."},
        {"role": "user", "content": "Please solve this issue: ..."},
        {"role": "assistant", "content": "THOUGHT: look around", "provider_specific_fields": {"refusal": None},
         "tool_calls": [{"id": "call_x", "type": "function", "function": {"name": "bash",
                                                                           "arguments": "{\"command\": \"ls\"}"}}]},
        {"role": "tool", "tool_call_id": "call_x", "content": "<returncode>0</returncode>\n<output>a.py</output>"},
    ]
    reply = {"role": "assistant", "content": "THOUGHT: done",
             "tool_calls": [{"id": "call_y", "type": "function", "function": {
                 "name": "bash", "arguments": "{\"command\": \"echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\"}"}}]}
    worker = asyncio.create_task(answer_one(rollout, reply, "tool_calls"))
    result = await client.chat.completions.create(model="policy", messages=messages, tools=TOOLS[:1],
                                                  extra_body={"drop_params": True})
    req = await worker
    assert req.messages[2]["provider_specific_fields"] == {"refusal": None}
    assert result.choices[0].message.tool_calls[0].function.arguments == reply["tool_calls"][0]["function"][
        "arguments"]
    await client.close()


def test_sync_sdk_through_background_gate():
    """The trainer is synchronous: drive the gate from this thread, the sync SDK against it, the worker on its loop."""
    with BackgroundGate(config=GateConfig(keepalive_interval_s=0.2)) as gate:
        rollout = gate.open_rollout("sync-1")
        assert rollout.base_url == f"{gate.url}/rollout/sync-1/v1"
        client = openai.OpenAI(base_url=rollout.base_url, api_key=rollout.api_key, max_retries=0, timeout=10)
        for stream in (False, True):
            worker = asyncio.run_coroutine_threadsafe(answer_one(rollout, TOOL_REPLY, "tool_calls", USAGE),
                                                      gate.loop)
            if stream:
                chunks = list(client.chat.completions.create(model="policy", messages=MESSAGES, tools=TOOLS,
                                                             stream=True, stream_options={"include_usage": True}))
                message, finish, usage = reassemble(chunks)
            else:
                result = client.chat.completions.create(model="policy", messages=MESSAGES, tools=TOOLS)
                message = result.choices[0].message.model_dump(include={"role", "content", "tool_calls"})
                for call in message["tool_calls"]:
                    call["function"] = {k: call["function"][k] for k in ("name", "arguments")}
                finish, usage = result.choices[0].finish_reason, result.usage
            req = worker.result(5)
            assert req.stream is stream
            assert message == TOOL_REPLY and finish == "tool_calls" and usage.total_tokens == 168
        assert gate.server.open_rollouts == 1
        gate.close_rollout("sync-1")
        assert gate.server.open_rollouts == 0
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="policy", messages=MESSAGES)
        client.close()
    assert not gate.running
