"""The gate's Anthropic Messages dialect through the real `anthropic` SDK: JSON and streams, tool use, thinking,
stop reasons, usage, the agent's echo mapped onto the exact internal conversation, and Anthropic-shaped errors for
malformed bodies and for every error path of the gate itself (401, 404, 405, 413, 429, 503, 504)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import anthropic
import pytest

from control_plane.responses import normalize_reply
from rollout_worker.serving.messages import messages_equivalent

MODEL_TEXT = "I will inspect the repository first. " * 5  # > stream_chunk_chars: several deltas
REASONING = "The test fails in src/; list it first.\nThen grep."
# Arguments as the worker's parser yields them (dicts); the gate encodes them once, compactly.
TOOL_REPLY = {
    "role": "assistant",
    "content": MODEL_TEXT,
    "reasoning_content": REASONING,
    "tool_calls": [
        {"id": "toolu_01abc", "type": "function", "function": {"name": "bash", "arguments": {
            "command": "ls -la && grep -rn 'def main' src/ | head -50", "timeout": 30, "env": {"A": "ü"}}}},
        {"id": "call_02XyZ", "type": "function", "function": {"name": "read", "arguments": {"path": "a/b.py"}}},
    ],
}
HELD, _ = normalize_reply(TOOL_REPLY, "tool_calls", None)  # the assistant message the worker holds after replying
USAGE = {"prompt_tokens": 123, "completion_tokens": 45}
TOOLS = [
    {"name": "bash", "description": "run a command", "cache_control": {"type": "ephemeral"},
     "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}},
    {"name": "read", "input_schema": {"type": "object", "properties": {}}},
]
INTERNAL_TOOLS = [
    {"type": "function", "function": {"name": "bash", "description": "run a command",
                                      "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "read", "parameters": {"type": "object", "properties": {}}}},
]
SYSTEM = [{"type": "text", "text": "You are a coding agent."},
          {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
MESSAGES = [{"role": "user", "content": [{"type": "text", "text": "Fix the bug."}]}]
INTERNAL_START = [{"role": "system", "content": [{"type": "text", "text": "You are a coding agent."},
                                                 {"type": "text", "text": "Be brief."}]},
                  {"role": "user", "content": "Fix the bug."}]


async def answer_one(rollout, message, finish_reason, usage=None, timeout=5.0):
    req = await rollout.next_request(timeout=timeout)
    assert await req.reply(message, finish_reason=finish_reason, usage=usage)
    return req


def client_for(rollout, **kwargs) -> anthropic.AsyncAnthropic:
    # The SDK appends /v1/messages itself: its base is the rollout URL without /v1.
    return anthropic.AsyncAnthropic(base_url=rollout.root_url, api_key=rollout.api_key, max_retries=0, timeout=10,
                                    **kwargs)


def echo(message) -> dict:
    """Our reply as an agent sends it back next turn: its content blocks, re-serialized."""
    return {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]}


def assert_tool_reply(message, req):
    assert message.id == req.id and message.id.startswith("msg_")
    assert message.type == "message" and message.role == "assistant" and message.model == "policy"
    assert message.stop_reason == "tool_use" and message.stop_sequence is None
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    thinking, text, *calls = message.content
    assert thinking.thinking == REASONING and thinking.signature
    assert text.text == MODEL_TEXT
    assert [(c.id, c.name, c.input) for c in calls] == [
        (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in TOOL_REPLY["tool_calls"]]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (123, 45)


async def test_non_streaming_tool_use_and_what_the_worker_sees(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    worker = asyncio.create_task(answer_one(rollout, TOOL_REPLY, "tool_calls", USAGE))
    message = await client.messages.create(
        model="claude-model-the-agent-names", max_tokens=256, system=SYSTEM, messages=MESSAGES, tools=TOOLS,
        stop_sequences=["</done>"], metadata={"user_id": "u1"},
        extra_body={"temperature": 0.7, "top_k": 40},  # sampling keys older clients send (not in SDK 2.x's signature)
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    req = await worker
    assert_tool_reply(message, req)
    assert req.dialect == "anthropic_messages" and req.stream is False
    assert req.messages == INTERNAL_START and req.tools == INTERNAL_TOOLS
    assert req.params == {"max_tokens": 256, "temperature": 0.7, "top_k": 40, "stop": ["</done>"],
                          "tool_choice": "required", "parallel_tool_calls": False}
    assert req.raw["model"] == "claude-model-the-agent-names"
    await client.close()


async def test_streaming_events_reassemble_exactly(make_gate):
    gate = await make_gate(stream_chunk_chars=16)
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    worker = asyncio.create_task(answer_one(rollout, TOOL_REPLY, "tool_calls", USAGE))
    events = [e async for e in await client.messages.create(model="policy", max_tokens=256, system=SYSTEM,
                                                             messages=MESSAGES, tools=TOOLS, stream=True)]
    req = await worker
    assert req.stream is True and req.messages == INTERNAL_START
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert events[0].message.id == req.id and events[0].message.usage.input_tokens == 123
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 4
    texts: dict[int, str] = {}
    for e in events:
        if e.type == "content_block_delta":
            piece = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}.get(
                e.delta.type)
            if piece:
                texts[e.index] = texts.get(e.index, "") + getattr(e.delta, piece)
    assert texts[0] == REASONING and texts[1] == MODEL_TEXT
    # the argument JSON arrives exactly as the worker's reply encoded it
    assert [texts[2], texts[3]] == [c["function"]["arguments"] for c in HELD["tool_calls"]]
    assert sum(1 for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta") >= 10
    assert events[-2].delta.stop_reason == "tool_use" and events[-2].usage.output_tokens == 45

    # The SDK's own accumulator (`messages.stream`) rebuilds the same message from the events.
    worker = asyncio.create_task(answer_one(rollout, TOOL_REPLY, "tool_calls", USAGE))
    async with client.messages.stream(model="policy", max_tokens=256, system=SYSTEM, messages=MESSAGES,
                                      tools=TOOLS) as stream:
        final = await stream.get_final_message()
    assert_tool_reply(final, await worker)
    await client.close()


async def test_pings_keep_a_slow_stream_alive(make_gate):
    gate = await make_gate(keepalive_interval_s=0.05)
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)

    async def slow_worker():
        req = await rollout.next_request(timeout=5)
        await asyncio.sleep(0.4)  # several `ping` events go out before message_start
        await req.reply({"role": "assistant", "content": "late"}, "stop")

    worker = asyncio.create_task(slow_worker())
    async with client.messages.stream(model="policy", max_tokens=8, messages=MESSAGES) as s:
        message = await s.get_final_message()
    await worker
    assert message.content[0].text == "late" and message.stop_reason == "end_turn"
    worker = asyncio.create_task(slow_worker())
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{rollout.root_url}/v1/messages", json=anthropic_body(stream=True),
                                headers={"x-api-key": rollout.api_key}) as resp:
            raw = await resp.read()
    await worker
    assert raw.startswith(b'event: ping\ndata: {"type":"ping"}\n\n') and raw.count(b"event: ping") >= 3
    assert raw.index(b"event: message_start") > raw.index(b"event: ping")
    await client.close()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("finish", "stop_reason"), [("stop", "end_turn"), ("length", "max_tokens")])
async def test_stop_reasons(make_gate, stream, finish, stop_reason):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    worker = asyncio.create_task(answer_one(rollout, {"role": "assistant", "content": "done ✓"}, finish,
                                            {"prompt_tokens": 7, "completion_tokens": 3}))
    kwargs = dict(model="policy", max_tokens=16, messages=MESSAGES)
    if stream:
        async with client.messages.stream(**kwargs) as s:
            message = await s.get_final_message()
    else:
        message = await client.messages.create(**kwargs)
    await worker
    assert message.stop_reason == stop_reason
    assert [(b.type, b.text) for b in message.content] == [("text", "done ✓")]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 3)
    await client.close()


async def test_truncation_can_be_reported_as_end_turn(make_gate):
    gate = await make_gate(report_truncation=False)
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    worker = asyncio.create_task(answer_one(rollout, {"role": "assistant", "content": "cut"}, "length"))
    message = await client.messages.create(model="policy", max_tokens=16, messages=MESSAGES)
    await worker
    assert message.stop_reason == "end_turn"
    await client.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_multi_turn_echo_maps_onto_the_held_turn(make_gate, stream):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)

    async def call(messages):
        kwargs = dict(model="policy", max_tokens=64, system=SYSTEM, messages=messages, tools=TOOLS)
        if not stream:
            return await client.messages.create(**kwargs)
        async with client.messages.stream(**kwargs) as s:
            return await s.get_final_message()

    worker = asyncio.create_task(answer_one(rollout, TOOL_REPLY, "tool_calls", USAGE))
    first = await call(MESSAGES)
    await worker
    results = {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01abc", "content": "a.py\nb.py"},
        {"type": "tool_result", "tool_use_id": "call_02XyZ", "is_error": True,
         "content": [{"type": "text", "text": "<tool_use_error>no such file</tool_use_error>"}]},
        {"type": "text", "text": "<system-reminder>keep going</system-reminder>"},
    ]}
    worker = asyncio.create_task(answer_one(rollout, {"role": "assistant", "content": "Done."}, "stop"))
    await call([*MESSAGES, echo(first), results])
    req = await worker
    assert req.messages == [
        *INTERNAL_START,
        HELD,  # our reply exactly as the worker holds it: reasoning, text, tool calls with ids and argument JSON
        {"role": "tool", "tool_call_id": "toolu_01abc", "content": "a.py\nb.py"},
        {"role": "tool", "tool_call_id": "call_02XyZ", "content": "<tool_use_error>no such file</tool_use_error>"},
        {"role": "user", "content": "<system-reminder>keep going</system-reminder>"},
    ]
    # An agent that splits our turn into several assistant messages, or drops the thinking, still matches it.
    split = [{"role": "assistant", "content": [b]} for b in echo(first)["content"][1:]]
    worker = asyncio.create_task(answer_one(rollout, {"role": "assistant", "content": "Done."}, "stop"))
    await call([*MESSAGES, *split, results])
    assert messages_equivalent((await worker).messages[2], HELD)
    await client.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_echo_of_a_sampled_tool_turn_extends_the_held_conversation(make_gate, stream):
    """Through the worker's own assembly and parser: think block + text + tool call out, echoed back, no fork."""
    from tests.support.dialects import SAMPLED_TOOL_TURN, ScriptedTurns

    turns = ScriptedTurns()
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)

    async def call(messages):
        kwargs = dict(model="policy", max_tokens=64, system=SYSTEM, messages=messages, tools=TOOLS)
        if not stream:
            return await client.messages.create(**kwargs)
        async with client.messages.stream(**kwargs) as s:
            return await s.get_final_message()

    worker = asyncio.create_task(turns.answer(rollout, SAMPLED_TOOL_TURN))
    first = await call(MESSAGES)
    _, _, held = await worker
    assert held["reasoning_content"] and held["tool_calls"]  # the parser split the think block and the tool call
    assert [b.type for b in first.content] == ["thinking", "text", "tool_use"]
    assert first.content[2].input == {"command": "ls -la src/ && echo 'ü'"}
    results = {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": first.content[2].id, "content": "src/a.py"}]}
    worker = asyncio.create_task(turns.answer(rollout, "Done."))
    await call([*MESSAGES, echo(first), results])
    _, plan, _ = await worker
    assert not plan.forked, plan.detail
    turns.assert_one_row_fully_trained()
    await client.close()


async def test_count_tokens_estimates_without_the_worker(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    small = await client.messages.count_tokens(model="policy", messages=MESSAGES)
    large = await client.messages.count_tokens(model="policy", system=SYSTEM, tools=TOOLS,
                                               messages=[{"role": "user", "content": "word " * 400}])
    assert 0 < small.input_tokens < large.input_tokens and 400 <= large.input_tokens <= 2000
    assert rollout.pending == 0  # never queued for the worker
    with pytest.raises(anthropic.BadRequestError) as info:
        await client.messages.count_tokens(model="policy", messages=[])
    assert info.value.body["error"]["type"] == "invalid_request_error"
    await client.close()


async def test_worker_failure_reaches_the_sdk_in_anthropic_shape(make_gate):
    gate = await make_gate(keepalive_interval_s=0.05)
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)

    async def fail_next(delay):
        req = await rollout.next_request(timeout=5)
        await asyncio.sleep(delay)
        assert await req.fail(400, "prompt is too long: 5000 tokens > 4096 maximum", code="context_length_exceeded")

    worker = asyncio.create_task(fail_next(0))
    with pytest.raises(anthropic.BadRequestError) as info:
        await client.messages.create(model="policy", max_tokens=16, messages=MESSAGES)
    await worker
    assert info.value.body == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "prompt is too long: 5000 tokens > 4096 maximum"}}

    worker = asyncio.create_task(fail_next(0.3))  # after keep-alive pings: the error arrives as an `error` event
    with pytest.raises(anthropic.APIStatusError) as info:
        async for _ in await client.messages.create(model="policy", max_tokens=16, messages=MESSAGES, stream=True):
            pass
    await worker
    assert info.value.body["error"]["message"].startswith("prompt is too long")
    await client.close()


def anthropic_body(**fields) -> dict:
    return {"model": "policy", "max_tokens": 16, "messages": MESSAGES, **fields}


MALFORMED = [
    ("not json", b'{"messages": [', "JSON"),
    ("body an array", b"[]", "object"),
    ("messages missing", {"model": "policy", "max_tokens": 5}, "messages"),
    ("messages empty", anthropic_body(messages=[]), "empty"),
    ("system role in messages", anthropic_body(messages=[{"role": "system", "content": "x"}]), "role"),
    ("content missing", anthropic_body(messages=[{"role": "user"}]), "content"),
    ("content a number", anthropic_body(messages=[{"role": "user", "content": 5}]), "content"),
    ("image block", anthropic_body(messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}]}]), "image"),
    ("tool_result without id", anthropic_body(messages=[{"role": "user", "content": [
        {"type": "tool_result", "content": "x"}]}]), "tool_use_id"),
    ("tool_use input a string", anthropic_body(messages=[*MESSAGES, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t1", "name": "bash", "input": "ls"}]}]), "input"),
    ("tool_use without name", anthropic_body(messages=[*MESSAGES, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t1", "input": {}}]}]), "name"),
    ("unknown block", anthropic_body(messages=[{"role": "user", "content": [{"type": "video"}]}]), "video"),
    ("system not text", anthropic_body(system=[{"type": "image"}]), "image"),
    ("server tool", anthropic_body(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "web_search"),
    ("tool without name", anthropic_body(tools=[{"input_schema": {}}]), "name"),
    ("tool_choice a string", anthropic_body(tool_choice="auto"), "tool_choice"),
    ("tool_choice tool without name", anthropic_body(tool_choice={"type": "tool"}), "name"),
    ("max_tokens zero", anthropic_body(max_tokens=0), "max_tokens"),
    ("stop_sequences a string", anthropic_body(stop_sequences="x"), "stop_sequences"),
    ("stream not boolean", anthropic_body(stream="yes"), "stream"),
]


def assert_anthropic_error(status, payload, expected_status, expected_type, word="", case=""):
    assert status == expected_status, (case, payload)
    assert payload["type"] == "error" and set(payload) == {"type", "error"}, (case, payload)
    assert payload["error"]["type"] == expected_type, (case, payload)
    assert word.lower() in payload["error"]["message"].lower(), (case, payload)


async def test_malformed_bodies_get_anthropic_shaped_400s(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    url = f"{rollout.root_url}/v1/messages"
    async with aiohttp.ClientSession(headers={"x-api-key": rollout.api_key, "anthropic-version": "2023-06-01",
                                              "Content-Type": "application/json"}) as session:
        for case, body, word in MALFORMED:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            async with session.post(url, data=data) as resp:
                payload = await resp.json()
            assert_anthropic_error(resp.status, payload, 400, "invalid_request_error", word, case)
    assert rollout.pending == 0
    client = client_for(rollout)
    with pytest.raises(anthropic.BadRequestError) as info:
        await client.messages.create(model="policy", max_tokens=16, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}]}])
    assert "text-only" in info.value.body["error"]["message"]
    await client.close()


async def test_the_gates_own_errors_in_anthropic_shape(make_gate):
    gate = await make_gate(max_body_bytes=4096, max_pending_per_rollout=1, queue_timeout_s=0.3)
    a = await gate.open_rollout("a")
    b = await gate.open_rollout("b")
    ok = json.dumps(anthropic_body()).encode()
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:
        async def post(url, data=ok, **headers):
            async with session.post(url, data=data, headers=headers) as resp:
                return resp.status, await resp.json()

        url_a, url_b = f"{a.root_url}/v1/messages", f"{b.root_url}/v1/messages"
        assert_anthropic_error(*await post(url_b), 401, "authentication_error", "missing")
        assert_anthropic_error(*await post(url_b, **{"x-api-key": a.api_key}), 401, "authentication_error")
        assert_anthropic_error(*await post(f"{b.root_url}/v1/messages/count_tokens", **{"x-api-key": a.api_key}),
                               401, "authentication_error")
        assert_anthropic_error(*await post(f"{a.root_url}/v1/messages/batches", **{"x-api-key": a.api_key}),
                               404, "not_found_error")
        async with session.get(url_a, headers={"x-api-key": a.api_key}) as resp:
            assert_anthropic_error(resp.status, await resp.json(), 405, "invalid_request_error")
        big = json.dumps(anthropic_body(messages=[{"role": "user", "content": "x" * 5000}])).encode()
        assert_anthropic_error(*await post(url_a, big, **{"x-api-key": a.api_key}), 413, "request_too_large")
        # 503: nobody takes the call off the queue in time; meanwhile a second call exceeds the pending limit (429)
        first = asyncio.create_task(post(url_a, **{"Authorization": f"Bearer {a.api_key}"}))
        while a.pending == 0:
            await asyncio.sleep(0.01)
        assert_anthropic_error(*await post(url_a, **{"x-api-key": a.api_key}), 429, "rate_limit_error")
        assert_anthropic_error(*await first, 503, "overloaded_error")
        await a.close()  # a closed rollout: 404 for the right key
        assert_anthropic_error(*await post(url_a, **{"x-api-key": a.api_key}), 404, "not_found_error")
    # the SDK maps them onto its own exception classes
    wrong = anthropic.AsyncAnthropic(base_url=b.root_url, api_key="irl-wrong", max_retries=0, timeout=5)
    with pytest.raises(anthropic.AuthenticationError):
        await wrong.messages.create(model="policy", max_tokens=8, messages=MESSAGES)
    closed = client_for(a)
    with pytest.raises(anthropic.NotFoundError):
        await closed.messages.create(model="policy", max_tokens=8, messages=MESSAGES)
    await wrong.close()
    await closed.close()


async def test_request_timeout_is_a_504_timeout_error(make_gate):
    gate = await make_gate(request_timeout_s=0.3)
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    taker = asyncio.create_task(rollout.next_request(timeout=5))  # taken, never answered
    with pytest.raises(anthropic.APIStatusError) as info:
        await client.messages.create(model="policy", max_tokens=8, messages=MESSAGES)
    await taker
    assert info.value.status_code == 504 and info.value.body["error"]["type"] == "timeout_error"
    await client.close()


async def test_bearer_auth_and_anthropic_version_are_accepted(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = anthropic.AsyncAnthropic(base_url=rollout.root_url, auth_token=rollout.api_key, max_retries=0,
                                      timeout=10, default_headers={"anthropic-version": "2023-06-01"})
    worker = asyncio.create_task(answer_one(rollout, {"role": "assistant", "content": "hi"}, "stop"))
    message = await client.messages.create(model="policy", max_tokens=8, messages=MESSAGES)
    await worker
    assert message.content[0].text == "hi"
    await client.close()


# -- a full rollout through the real worker and engine, spoken in Anthropic Messages ---------------------------------
def scripted_claude_like_agent(endpoint, stream: bool, turns: int = 3) -> None:
    """Three turns the way Claude Code talks: system blocks, tools, our reply echoed block by block, tool results."""
    client = anthropic.Anthropic(base_url=endpoint.base_url.removesuffix("/v1"), api_key=endpoint.api_key,
                                 max_retries=0, timeout=120)
    messages = [{"role": "user", "content": [{"type": "text", "text": "Fix the failing test in repo/."}]}]
    for turn in range(turns):
        kwargs = dict(model=endpoint.model, max_tokens=24, system=SYSTEM, messages=messages, tools=TOOLS,
                      extra_body={"temperature": 0.2})  # ignored by the worker
        if stream:
            with client.messages.stream(**kwargs) as s:
                reply = s.get_final_message()
        else:
            reply = client.messages.create(**kwargs)
        messages.append(echo(reply))
        calls = [block for block in reply.content if block.type == "tool_use"]
        if calls:
            messages.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": c.id, "content": f"ran turn {turn}"} for c in calls]})
        else:
            messages.append({"role": "user", "content": [{"type": "text", "text": f"Observation {turn}: ok"}]})
    client.close()


@pytest.mark.slow
def test_full_rollouts_over_anthropic_messages_are_token_exact(engine, tiny_model_dir):
    from tests.support.dialects import SdkAgentRunner, assert_token_exact, run_rollouts

    records = run_rollouts(engine.url, SdkAgentRunner(scripted_claude_like_agent, [False, True]), n=2)
    assert sorted(r["agent_output"] for r in records) == ["False", "True"]  # one rollout streamed, one did not
    assert_token_exact(records, tiny_model_dir, turns=3)
