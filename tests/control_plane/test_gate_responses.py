"""The gate's OpenAI Responses dialect through the real `openai` SDK: JSON and streams, tool calls, reasoning,
multi-turn echo and `previous_response_id` mapped onto the exact internal conversation, OpenAI-shaped errors."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import openai
import pytest

MODEL_TEXT = "I will inspect the repository first. " * 5  # > stream_chunk_chars: several deltas
ARGS_BASH = json.dumps({"command": "ls -la && grep -rn 'def main' src/ | head -50", "timeout": 30})
REASONING = "The test fails in src/; list it first.\nThen grep."
TOOL_REPLY = {
    "role": "assistant",
    "content": MODEL_TEXT,
    "reasoning_content": REASONING,
    "tool_calls": [
        {"id": "call_abc123", "type": "function", "function": {"name": "bash", "arguments": ARGS_BASH}},
        {"id": "call_02XyZ", "type": "function", "function": {"name": "read", "arguments": '{"path":"a/b.py"}'}},
    ],
}
USAGE = {"prompt_tokens": 123, "completion_tokens": 45}
TOOLS = [  # the flat Responses shape
    {"type": "function", "name": "bash", "description": "run a command", "strict": False,
     "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}},
    {"type": "function", "name": "read", "parameters": {"type": "object", "properties": {}}},
]
INTERNAL_TOOLS = [
    {"type": "function", "function": {"name": "bash", "description": "run a command",
                                      "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "read", "parameters": {"type": "object", "properties": {}}}},
]
INSTRUCTIONS = "You are a coding agent."
USER_ITEM = {"role": "user", "content": [{"type": "input_text", "text": "Fix the bug."}]}
INTERNAL_START = [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": "Fix the bug."}]


async def answer_one(rollout, message, finish_reason, usage=None, timeout=5.0):
    req = await rollout.next_request(timeout=timeout)
    assert await req.reply(message, finish_reason=finish_reason, usage=usage)
    return req


def client_for(rollout) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=rollout.base_url, api_key=rollout.api_key, max_retries=0, timeout=10)


def echo_items(response) -> list[dict]:
    """The response's output as an agent sends it back next turn (Codex re-sends the items it received)."""
    return [item.model_dump(exclude_none=True) for item in response.output]


def assert_tool_reply(response, req):
    assert response.id == req.id and response.id.startswith("resp_")
    assert response.object == "response" and response.model == "policy" and response.status == "completed"
    kinds = [item.type for item in response.output]
    assert kinds == ["reasoning", "message", "function_call", "function_call"]
    reasoning, message, *calls = response.output
    assert [c.text for c in reasoning.content] == [REASONING]
    assert response.output_text == MODEL_TEXT and message.role == "assistant"
    got = [(c.call_id, c.name, c.arguments) for c in calls]
    want = [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in TOOL_REPLY["tool_calls"]]
    assert got == want  # ids, names and the argument JSON, byte for byte
    assert len({item.id for item in response.output}) == 4
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (123, 45, 168)


async def test_non_streaming_tool_calls_and_what_the_worker_sees(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    worker = asyncio.create_task(answer_one(rollout, TOOL_REPLY, "tool_calls", USAGE))
    response = await client.responses.create(model="gpt-5-codex", instructions=INSTRUCTIONS, input=[USER_ITEM],
                                             tools=TOOLS, temperature=0.7, top_p=0.9, max_output_tokens=256,
                                             store=False, include=["reasoning.encrypted_content"],
                                             reasoning={"effort": "high"}, tool_choice="auto")
    req = await worker
    assert_tool_reply(response, req)
    assert response.instructions == INSTRUCTIONS and response.store is False and response.max_output_tokens == 256
    assert response.temperature is None  # the agent's sampling values are not used, so not echoed as if they were
    assert req.dialect == "openai_responses" and req.stream is False
    assert req.messages == INTERNAL_START and req.tools == INTERNAL_TOOLS
    assert req.params == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 256, "tool_choice": "auto"}
    assert req.raw["model"] == "gpt-5-codex"
    await client.close()


async def test_streaming_events_reassemble_exactly(make_gate):
    gate = await make_gate(stream_chunk_chars=16)
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    worker = asyncio.create_task(answer_one(rollout, TOOL_REPLY, "tool_calls", USAGE))
    events = [e async for e in await client.responses.create(model="policy", instructions=INSTRUCTIONS,
                                                              input="Fix the bug.", tools=TOOLS, stream=True)]
    req = await worker
    assert req.stream is True and req.messages == INTERNAL_START
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    for required in ("response.output_item.added", "response.content_part.added", "response.output_text.delta",
                     "response.output_text.done", "response.content_part.done",
                     "response.function_call_arguments.delta", "response.function_call_arguments.done",
                     "response.output_item.done", "response.reasoning_text.delta"):
        assert required in kinds, required
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == MODEL_TEXT and kinds.count("response.output_text.delta") >= len(MODEL_TEXT) // 16
    arguments: dict[int, str] = {}
    for e in events:
        if e.type == "response.function_call_arguments.delta":
            arguments[e.output_index] = arguments.get(e.output_index, "") + e.delta
    assert list(arguments.values()) == [c["function"]["arguments"] for c in TOOL_REPLY["tool_calls"]]
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert [(i.call_id, i.name, i.arguments) for i in done if i.type == "function_call"] == [
        (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in TOOL_REPLY["tool_calls"]]
    assert all(e.response.id == req.id for e in events if e.type.startswith("response.") and hasattr(e, "response"))
    assert_tool_reply(events[-1].response, req)

    # The SDK's own accumulator (`responses.stream`) rebuilds the same response from the events.
    worker = asyncio.create_task(answer_one(rollout, TOOL_REPLY, "tool_calls", USAGE))
    async with client.responses.stream(model="policy", instructions=INSTRUCTIONS, input="Fix the bug.",
                                       tools=TOOLS) as stream:
        final = await stream.get_final_response()
    assert_tool_reply(final, await worker)
    await client.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_multi_turn_echo_and_previous_response_id_give_the_same_internal_conversation(make_gate, stream):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)

    async def call(**kwargs):
        if not stream:
            return await client.responses.create(model="policy", tools=TOOLS, **kwargs)
        async with client.responses.stream(model="policy", tools=TOOLS, **kwargs) as s:
            return await s.get_final_response()

    worker = asyncio.create_task(answer_one(rollout, TOOL_REPLY, "tool_calls", USAGE))
    first = await call(instructions=INSTRUCTIONS, input=[USER_ITEM])
    await worker
    outputs = [{"type": "function_call_output", "call_id": "call_abc123", "output": "a.py\nb.py"},
               {"type": "function_call_output", "call_id": "call_02XyZ",
                "output": [{"type": "input_text", "text": "print(1)"}]}]
    # What the worker must receive on turn 2: our reply exactly as it held it, then the two tool results.
    held = {"role": "assistant", "content": MODEL_TEXT, "reasoning_content": REASONING,
            "tool_calls": TOOL_REPLY["tool_calls"]}
    expected = [*INTERNAL_START, held, {"role": "tool", "tool_call_id": "call_abc123", "content": "a.py\nb.py"},
                {"role": "tool", "tool_call_id": "call_02XyZ", "content": "print(1)"}]

    # (a) the agent re-sends everything (Codex with store=false)
    final_reply = {"role": "assistant", "content": "Done."}
    worker = asyncio.create_task(answer_one(rollout, final_reply, "stop"))
    second = await call(instructions=INSTRUCTIONS, input=[USER_ITEM, *echo_items(first), *outputs], store=False)
    assert (await worker).messages == expected
    assert second.output_text == "Done." and second.previous_response_id is None

    # (b) the agent sends only the new items and names the previous response
    worker = asyncio.create_task(answer_one(rollout, final_reply, "stop"))
    chained = await call(instructions=INSTRUCTIONS, previous_response_id=first.id, input=outputs)
    assert (await worker).messages == expected
    assert chained.previous_response_id == first.id

    # (c) a chain of three: the history holds our second reply too; instructions are per request, not carried over
    worker = asyncio.create_task(answer_one(rollout, {"role": "assistant", "content": "Bye."}, "stop"))
    await call(instructions="New instructions.", previous_response_id=chained.id, input="thanks")
    third = await worker
    assert third.messages == [{"role": "system", "content": "New instructions."}, *expected[1:],
                              {"role": "assistant", "content": "Done."}, {"role": "user", "content": "thanks"}]
    await client.close()


@pytest.mark.parametrize(("stream", "chained"), [(False, False), (True, False), (False, True), (True, True)])
async def test_echo_of_a_sampled_tool_turn_extends_the_held_conversation(make_gate, stream, chained):
    """Through the worker's own assembly and parser: reasoning + text + function call out, echoed back (whole
    history, or previous_response_id + new items), no fork."""
    from tests.support.dialects import SAMPLED_TOOL_TURN, ScriptedTurns

    turns = ScriptedTurns()
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)

    async def call(**kwargs):
        kwargs = dict(model="policy", instructions=INSTRUCTIONS, tools=TOOLS, **kwargs)
        if not stream:
            return await client.responses.create(**kwargs)
        async with client.responses.stream(**kwargs) as s:
            return await s.get_final_response()

    worker = asyncio.create_task(turns.answer(rollout, SAMPLED_TOOL_TURN))
    first = await call(input=[USER_ITEM])
    _, _, held = await worker
    assert held["reasoning_content"] and held["tool_calls"]  # the parser split the think block and the tool call
    assert [i.type for i in first.output] == ["reasoning", "message", "function_call"]
    assert json.loads(first.output[2].arguments) == {"command": "ls -la src/ && echo 'ü'"}
    output = {"type": "function_call_output", "call_id": first.output[2].call_id, "output": "src/a.py"}
    worker = asyncio.create_task(turns.answer(rollout, "Done."))
    if chained:
        await call(previous_response_id=first.id, input=[output])
    else:
        await call(input=[USER_ITEM, *echo_items(first), output])
    _, plan, _ = await worker
    assert not plan.forked, plan.detail
    turns.assert_one_row_fully_trained()
    await client.close()


async def test_reasoning_only_reply_and_its_echo(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    reply = {"role": "assistant", "content": "Answer.", "reasoning_content": "thinking hard"}
    worker = asyncio.create_task(answer_one(rollout, reply, "stop"))
    first = await client.responses.create(model="policy", input="q")
    await worker
    assert [i.type for i in first.output] == ["reasoning", "message"]
    # Codex echoes reasoning with its summary and encrypted content too; the text it carries maps back.
    echoed = echo_items(first)
    echoed[0]["encrypted_content"] = "opaque"
    worker = asyncio.create_task(answer_one(rollout, {"role": "assistant", "content": "ok"}, "stop"))
    await client.responses.create(model="policy", input=[{"role": "user", "content": "q"}, *echoed,
                                                         {"role": "user", "content": "more"}])
    req = await worker
    assert req.messages == [{"role": "user", "content": "q"},
                            {"role": "assistant", "content": "Answer.", "reasoning_content": "thinking hard"},
                            {"role": "user", "content": "more"}]
    await client.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_length_is_an_incomplete_response(make_gate, stream):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    worker = asyncio.create_task(answer_one(rollout, {"role": "assistant", "content": "trunc"}, "length"))
    if stream:
        events = [e async for e in await client.responses.create(model="policy", input="q", stream=True)]
        assert events[-1].type == "response.incomplete"
        response = events[-1].response
    else:
        response = await client.responses.create(model="policy", input="q")
    await worker
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "trunc"
    await client.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_truncation_can_be_reported_as_completed_for_agents_that_retry_it(make_gate, stream):
    gate = await make_gate(report_truncation=False)
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    worker = asyncio.create_task(answer_one(rollout, {"role": "assistant", "content": "trunc"}, "length"))
    if stream:
        events = [e async for e in await client.responses.create(model="policy", input="q", stream=True)]
        assert events[-1].type == "response.completed"
        response = events[-1].response
    else:
        response = await client.responses.create(model="policy", input="q")
    await worker
    assert response.status == "completed" and response.incomplete_details is None
    await client.close()


async def test_worker_failure_reaches_the_sdk_in_openai_shape(make_gate):
    gate = await make_gate(keepalive_interval_s=0.05)
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)

    async def fail_next(delay):
        req = await rollout.next_request(timeout=5)
        await asyncio.sleep(delay)  # past a keep-alive: the stream's headers are out, so the error is an event
        assert await req.fail(400, "prompt too long", code="context_length_exceeded")

    worker = asyncio.create_task(fail_next(0))
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model="policy", input="q")
    await worker
    assert info.value.code == "context_length_exceeded" and "prompt too long" in info.value.message

    worker = asyncio.create_task(fail_next(0.3))
    events = [e async for e in await client.responses.create(model="policy", input="q", stream=True)]
    await worker
    assert [e.type for e in events] == ["response.created", "response.failed"]
    assert events[1].response.status == "failed"
    assert events[1].response.error.code == "context_length_exceeded"
    assert events[1].response.error.message == "prompt too long"
    await client.close()


MALFORMED = [
    ("not json", b'{"input": [', "JSON"),
    ("body an array", b"[]", "object"),
    ("input a number", {"input": 5}, "input"),
    ("no input at all", {"model": "policy"}, "input"),
    ("item not an object", {"input": ["hi"]}, "input[0]"),
    ("unknown item type", {"input": [{"type": "web_search_call", "id": "ws_1"}]}, "web_search_call"),
    ("image part", {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}]},
     "image"),
    ("function_call without call_id", {"input": [{"type": "function_call", "name": "bash", "arguments": "{}"}]},
     "call_id"),
    ("function_call dict arguments", {"input": [{"type": "function_call", "call_id": "c", "name": "bash",
                                                 "arguments": {"a": 1}}]}, "arguments"),
    ("output without call_id", {"input": [{"type": "function_call_output", "output": "x"}]}, "call_id"),
    ("bad role", {"input": [{"role": "wizard", "content": "x"}]}, "role"),
    ("non-function tool", {"input": "q", "tools": [{"type": "web_search"}]}, "web_search"),
    ("tool without name", {"input": "q", "tools": [{"type": "function", "parameters": {}}]}, "name"),
    ("instructions not a string", {"input": "q", "instructions": 5}, "instructions"),
    ("unknown previous response", {"input": "q", "previous_response_id": "resp_nope"}, "resp_nope"),
    ("max_output_tokens zero", {"input": "q", "max_output_tokens": 0}, "max_output_tokens"),
    ("stream not boolean", {"input": "q", "stream": "yes"}, "stream"),
]


async def test_malformed_bodies_get_openai_shaped_400s(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    url = f"{rollout.base_url}/responses"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {rollout.api_key}"}) as session:
        for case, body, word in MALFORMED:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as resp:
                payload = await resp.json()
            assert resp.status == 400, (case, payload)
            error = payload["error"]
            assert word.lower() in error["message"].lower(), (case, error)
            assert error["type"] == "invalid_request_error" and "code" in error, (case, error)
    assert rollout.pending == 0  # nothing reached the worker
    client = client_for(rollout)
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model="policy", input="q", previous_response_id="resp_missing")
    assert info.value.code == "previous_response_not_found"
    await client.close()


async def test_bad_key_and_wrong_or_closed_rollout(make_gate):
    gate = await make_gate()
    a = await gate.open_rollout("a")
    b = await gate.open_rollout("b")
    wrong_key = openai.AsyncOpenAI(base_url=b.base_url, api_key=a.api_key, max_retries=0, timeout=5)
    with pytest.raises(openai.AuthenticationError) as info:
        await wrong_key.responses.create(model="policy", input="q")
    assert info.value.body["type"] == "authentication_error"
    assert b.pending == 0
    client_a = client_for(a)
    await a.close()
    with pytest.raises(openai.NotFoundError):
        await client_a.responses.create(model="policy", input="q")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{b.base_url}/responses", headers={"Authorization": f"Bearer {b.api_key}"}) as resp:
            assert resp.status == 405 and "error" in await resp.json()
    await wrong_key.close()
    await client_a.close()


# -- a full rollout through the real worker and engine, spoken in OpenAI Responses -----------------------------------
def scripted_codex_like_agent(endpoint, variant: tuple[bool, bool], turns: int = 3) -> None:
    """Three turns the way Codex talks: instructions, our output items echoed back (or only `previous_response_id`
    and the new items), function_call_output for each call."""
    stream, chained = variant
    client = openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0, timeout=120)
    history = [USER_ITEM]
    new_items, previous = [USER_ITEM], None
    for turn in range(turns):
        kwargs = dict(model=endpoint.model, instructions=INSTRUCTIONS, tools=TOOLS, max_output_tokens=24,
                      temperature=0.2, input=new_items if chained else history, store=chained)
        if chained and previous is not None:
            kwargs["previous_response_id"] = previous
        if stream:  # raw events: the SDK's `responses.stream` helper rejects a truncated (incomplete) response
            final = [e for e in client.responses.create(**kwargs, stream=True)][-1]
            assert final.type in ("response.completed", "response.incomplete"), final.type
            response = final.response
        else:
            response = client.responses.create(**kwargs)
        calls = [item for item in response.output if item.type == "function_call"]
        followups = [{"type": "function_call_output", "call_id": c.call_id, "output": f"ran turn {turn}"}
                     for c in calls] or [{"role": "user", "content": f"Observation {turn}: ok"}]
        history += [*echo_items(response), *followups]
        new_items, previous = followups, response.id
    client.close()


@pytest.mark.slow
def test_full_rollouts_over_openai_responses_are_token_exact(engine, tiny_model_dir):
    from tests.support.dialects import SdkAgentRunner, assert_token_exact, run_rollouts

    variants = [(False, False), (True, True)]  # JSON + whole history echoed; SSE + previous_response_id
    records = run_rollouts(engine.url, SdkAgentRunner(scripted_codex_like_agent, variants), n=2)
    assert sorted(r["agent_output"] for r in records) == sorted(map(str, variants))
    assert_token_exact(records, tiny_model_dir, turns=3)
