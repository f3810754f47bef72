"""The gate's Gemini dialect through the official Google Gen AI SDK (`google-genai`) against the real aiohttp gate on
loopback: generateContent and streamGenerateContent (SSE), function calls reassembled exactly, the function response
turn mapped onto the exact internal conversation, thoughts, finish reasons, usage, countTokens, the API key as header
and as `?key=`, and Google-shaped errors for malformed bodies and for every error path of the gate itself."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from google import genai
from google.genai import errors, types

from control_plane.responses import normalize_reply

MODEL_TEXT = "I will inspect the repository first. " * 5  # > stream_chunk_chars: several pieces
REASONING = "The test fails in src/; list it first.\nThen grep."
TOOL_REPLY = {
    "role": "assistant",
    "content": MODEL_TEXT,
    "reasoning_content": REASONING,
    "tool_calls": [
        {"id": "call_01abc", "type": "function", "function": {"name": "run_shell_command", "arguments": {
            "command": "ls -la && grep -rn 'def main' src/ | head -50", "timeout": 30, "env": {"A": "ü"}}}},
        {"id": "call_02XyZ", "type": "function", "function": {"name": "read_file", "arguments": {"path": "a/b.py"}}},
    ],
}
HELD, _ = normalize_reply(TOOL_REPLY, "tool_calls", None)  # the assistant message the worker holds after replying
USAGE = {"prompt_tokens": 123, "completion_tokens": 45}
SHELL_SCHEMA = {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}
TOOLS = [types.Tool(function_declarations=[
    types.FunctionDeclaration(name="run_shell_command", description="run a command",
                              parameters_json_schema=SHELL_SCHEMA),
    types.FunctionDeclaration(name="read_file", parameters_json_schema={"type": "object", "properties": {}}),
])]
INTERNAL_TOOLS = [
    {"type": "function", "function": {"name": "run_shell_command", "description": "run a command",
                                      "parameters": SHELL_SCHEMA}},
    {"type": "function", "function": {"name": "read_file", "parameters": {"type": "object", "properties": {}}}},
]
SYSTEM = "You are a coding agent. Be brief."
CONTENTS = [types.Content(role="user", parts=[types.Part(text="Fix the bug.")])]
INTERNAL_START = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Fix the bug."}]


def client_for(rollout, **http) -> genai.Client:
    # The SDK appends /v1beta/models/{model}:{method} to its base URL: the rollout URL without /v1.
    options = types.HttpOptions(base_url=rollout.root_url, timeout=10_000,
                                retry_options=types.HttpRetryOptions(attempts=1), **http)
    return genai.Client(api_key=rollout.api_key, http_options=options)


def config(**fields) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(system_instruction=SYSTEM, tools=TOOLS, **fields)


async def answer_one(rollout, message, finish_reason, usage=None, timeout=5.0):
    req = await rollout.next_request(timeout=timeout)
    assert await req.reply(message, finish_reason=finish_reason, usage=usage)
    return req


async def generate(client, contents, stream: bool, **fields) -> types.GenerateContentResponse | list:
    """One call; a stream comes back as the list of its chunks."""
    if not stream:
        return await client.aio.models.generate_content(model="policy", contents=contents, config=config(**fields))
    return [c async for c in await client.aio.models.generate_content_stream(model="policy", contents=contents,
                                                                             config=config(**fields))]


def reassemble(chunks: list) -> types.Content:
    """A stream's parts joined the way Gemini CLI keeps them: consecutive text (or thought) pieces become one part."""
    parts: list[types.Part] = []
    for chunk in chunks:
        for part in chunk.candidates[0].content.parts or ():
            last = parts[-1] if parts else None
            if part.text is not None and last is not None and last.text is not None and last.thought == part.thought:
                last.text += part.text
            else:
                parts.append(part.model_copy())
    return types.Content(role="model", parts=parts)


def assert_tool_reply(content: types.Content):
    thought, text, *calls = content.parts
    assert thought.thought is True and thought.text == REASONING
    assert not text.thought and text.text == MODEL_TEXT
    assert [(c.function_call.id, c.function_call.name, c.function_call.args) for c in calls] == [
        (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in TOOL_REPLY["tool_calls"]]


async def test_non_streaming_function_calls_and_what_the_worker_sees(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    worker = asyncio.create_task(answer_one(rollout, TOOL_REPLY, "tool_calls", USAGE))
    response = await generate(client, CONTENTS, False, temperature=0.7, top_p=0.9, top_k=40, max_output_tokens=256,
                              stop_sequences=["</done>"], seed=7,
                              thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_budget=1024),
                              tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
                                  mode="ANY", allowed_function_names=["run_shell_command"])))
    req = await worker
    assert req.dialect == "gemini_generate_content" and req.stream is False and req.id.startswith("gen-")
    assert req.messages == INTERNAL_START and req.tools == INTERNAL_TOOLS and req.model == "policy"
    assert req.params == {"max_tokens": 256, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 7,
                          "stop": ["</done>"],
                          "tool_choice": {"type": "function", "function": {"name": "run_shell_command"}}}
    candidate = response.candidates[0]
    assert candidate.finish_reason == types.FinishReason.STOP and candidate.content.role == "model"
    assert_tool_reply(candidate.content)
    assert [c.name for c in response.function_calls] == ["run_shell_command", "read_file"]
    usage = response.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.total_token_count) == (123, 45, 168)
    assert response.response_id == req.id and response.model_version == "policy"


async def test_streaming_reassembles_exactly(make_gate):
    gate = await make_gate(stream_chunk_chars=16)
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    worker = asyncio.create_task(answer_one(rollout, TOOL_REPLY, "tool_calls", USAGE))
    chunks = await generate(client, CONTENTS, True)
    req = await worker
    assert req.stream is True and req.messages == INTERNAL_START
    assert len(chunks) > 10  # thought and text came in pieces
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.candidates[0].finish_reason == types.FinishReason.STOP and last.usage_metadata.total_token_count == 168
    assert [p.function_call.name for p in last.candidates[0].content.parts] == ["run_shell_command", "read_file"]
    assert_tool_reply(reassemble(chunks))


async def test_blank_line_keepalives_keep_a_slow_stream_alive(make_gate):
    gate = await make_gate(keepalive_interval_s=0.05)
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)

    async def slow_worker():
        req = await rollout.next_request(timeout=5)
        await asyncio.sleep(0.4)  # several keep-alives go out before the first event
        await req.reply({"role": "assistant", "content": "late"}, "stop")

    worker = asyncio.create_task(slow_worker())
    chunks = await generate(client, CONTENTS, True)
    await worker
    assert "".join(c.text or "" for c in chunks) == "late"
    worker = asyncio.create_task(slow_worker())
    url = f"{rollout.root_url}/v1beta/models/policy:streamGenerateContent?alt=sse"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
                                headers={"x-goog-api-key": rollout.api_key}) as resp:
            raw = await resp.read()
            assert resp.headers["Content-Type"].startswith("text/event-stream")
    await worker
    assert raw.startswith(b"\r\n\r\n\r\n") and raw.lstrip(b"\r\n").startswith(b"data: {")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("finish", "reason"), [("stop", "STOP"), ("length", "MAX_TOKENS"),
                                                ("content_filter", "SAFETY")])
async def test_finish_reasons(make_gate, stream, finish, reason):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    worker = asyncio.create_task(answer_one(rollout, {"role": "assistant", "content": "done ✓"}, finish,
                                            {"prompt_tokens": 7, "completion_tokens": 3}))
    response = await generate(client, CONTENTS, stream)
    await worker
    last = response[-1] if stream else response
    assert last.candidates[0].finish_reason == types.FinishReason(reason)
    text = "".join(c.text or "" for c in response) if stream else response.text
    assert text == "done ✓" and last.usage_metadata.prompt_token_count == 7


@pytest.mark.parametrize(("gate_setting", "agent_declares", "reason"), [
    (None, False, "STOP"),  # the rollout's agent wants a cut turn reported as an end of turn
    (None, None, "MAX_TOKENS"),  # an agent that declares nothing: reported
    (True, False, "MAX_TOKENS"),  # the user's setting overrides the agent's declaration
    (False, True, "STOP"),
])
async def test_truncation_reporting_follows_the_agent_unless_the_user_overrides(make_gate, gate_setting,
                                                                                agent_declares, reason):
    gate = await make_gate(report_truncation=gate_setting)
    rollout = await gate.open_rollout("r1", report_truncation=agent_declares)
    client = client_for(rollout)
    worker = asyncio.create_task(answer_one(rollout, {"role": "assistant", "content": "cut"}, "length"))
    response = await generate(client, CONTENTS, False)
    await worker
    assert response.candidates[0].finish_reason == types.FinishReason(reason)


@pytest.mark.parametrize("stream", [False, True])
async def test_function_response_turn_maps_onto_the_held_turn(make_gate, stream):
    gate = await make_gate(stream_chunk_chars=16)
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    worker = asyncio.create_task(answer_one(rollout, TOOL_REPLY, "tool_calls", USAGE))
    first = await generate(client, CONTENTS, stream)
    await worker
    echoed = reassemble(first) if stream else first.candidates[0].content
    results = types.Content(role="user", parts=[
        types.Part(function_response=types.FunctionResponse(id="call_01abc", name="run_shell_command",
                                                            response={"output": "a.py\nb.py"})),
        types.Part(function_response=types.FunctionResponse(id="call_02XyZ", name="read_file",
                                                            response={"error": "no such file", "code": 2})),
        types.Part(text="<system-reminder>keep going</system-reminder>"),
    ])
    worker = asyncio.create_task(answer_one(rollout, {"role": "assistant", "content": "Done."}, "stop"))
    await generate(client, [*CONTENTS, echoed, results], stream)
    req = await worker
    assert req.messages == [
        *INTERNAL_START,
        HELD,  # our reply exactly as the worker holds it: reasoning, text, tool calls with ids and argument JSON
        {"role": "tool", "tool_call_id": "call_01abc", "content": "a.py\nb.py"},
        {"role": "tool", "tool_call_id": "call_02XyZ", "content": '{"error":"no such file","code":2}'},
        {"role": "user", "content": "<system-reminder>keep going</system-reminder>"},
    ]


async def test_history_without_call_ids_pairs_responses_with_calls(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    history = [*CONTENTS, types.Content(role="model", parts=[
        types.Part(function_call=types.FunctionCall(name="read_file", args={"path": "a"})),
        types.Part(function_call=types.FunctionCall(name="run_shell_command", args={"command": "ls"})),
        types.Part(function_call=types.FunctionCall(name="read_file", args={"path": "b"}))]),
        types.Content(role="user", parts=[
            types.Part(function_response=types.FunctionResponse(name="read_file", response={"output": "A"})),
            types.Part(function_response=types.FunctionResponse(name="run_shell_command", response={"output": "L"})),
            types.Part(function_response=types.FunctionResponse(name="read_file", response={"output": "B"}))])]
    worker = asyncio.create_task(answer_one(rollout, {"role": "assistant", "content": "ok"}, "stop"))
    await generate(client, history, False)
    req = await worker
    calls = req.messages[2]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_1_0", "call_1_1", "call_1_2"]
    assert [(m["tool_call_id"], m["content"]) for m in req.messages[3:]] == [
        ("call_1_0", "A"), ("call_1_1", "L"), ("call_1_2", "B")]


@pytest.mark.parametrize("stream", [False, True])
async def test_echo_of_a_sampled_tool_turn_extends_the_held_conversation(make_gate, stream):
    """Through the worker's own assembly and parser: think block + text + tool call out, echoed back, no fork."""
    from tests.support.dialects import SAMPLED_TOOL_TURN, ScriptedTurns

    turns = ScriptedTurns()
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    bash = [types.Tool(function_declarations=[types.FunctionDeclaration(name="bash",
                                                                        parameters_json_schema=SHELL_SCHEMA)])]
    call = dict(model="policy", config=types.GenerateContentConfig(system_instruction=SYSTEM, tools=bash))

    async def ask(contents):
        if not stream:
            return (await client.aio.models.generate_content(contents=contents, **call)).candidates[0].content
        return reassemble([c async for c in await client.aio.models.generate_content_stream(contents=contents,
                                                                                             **call)])

    worker = asyncio.create_task(turns.answer(rollout, SAMPLED_TOOL_TURN))
    first = await ask(CONTENTS)
    _, _, held = await worker
    assert held["reasoning_content"] and held["tool_calls"]
    assert [bool(p.thought) for p in first.parts] == [True, False, False]
    function_call = first.parts[2].function_call
    assert function_call.args == {"command": "ls -la src/ && echo 'ü'"}
    # Gemini CLI drops thought parts from its history: the echo without them must still extend the held turn.
    echoed = types.Content(role="model", parts=[p for p in first.parts if not p.thought])
    results = types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
        id=function_call.id, name="bash", response={"output": "src/a.py"}))])
    worker = asyncio.create_task(turns.answer(rollout, "Done."))
    await ask([*CONTENTS, echoed, results])
    _, plan, _ = await worker
    assert not plan.forked, plan.detail
    turns.assert_one_row_fully_trained()


async def test_count_tokens_estimates_without_the_worker(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)
    small = await client.aio.models.count_tokens(model="policy", contents=CONTENTS)
    large = await client.aio.models.count_tokens(model="policy", contents="word " * 400)
    assert 0 < small.total_tokens < large.total_tokens and 400 <= large.total_tokens <= 2000
    assert rollout.pending == 0  # never queued for the worker
    with pytest.raises(errors.ClientError) as info:
        await client.aio.models.count_tokens(model="policy", contents=[types.Content(role="system", parts=[
            types.Part(text="x")])])
    assert "role" in info.value.message and info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"


async def test_worker_failure_reaches_the_sdk_in_googles_shape(make_gate):
    gate = await make_gate(keepalive_interval_s=0.05)
    rollout = await gate.open_rollout("r1")
    client = client_for(rollout)

    async def fail_next(delay):
        req = await rollout.next_request(timeout=5)
        await asyncio.sleep(delay)
        assert await req.fail(400, "prompt is too long: 5000 tokens > 4096 maximum", code="context_length_exceeded")

    worker = asyncio.create_task(fail_next(0))
    with pytest.raises(errors.ClientError) as info:
        await generate(client, CONTENTS, False)
    await worker
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert info.value.details == {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                            "message": "prompt is too long: 5000 tokens > 4096 maximum"}}
    worker = asyncio.create_task(fail_next(0.3))  # after keep-alives: the error arrives inside the stream
    with pytest.raises(errors.ClientError) as info:
        await generate(client, CONTENTS, True)
    await worker
    assert info.value.code == 400 and info.value.message.startswith("prompt is too long")


def body(**fields) -> dict:
    return {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], **fields}


MALFORMED = [
    ("not json", b'{"contents": [', "JSON"),
    ("body an array", b"[]", "object"),
    ("contents missing", {"generationConfig": {}}, "contents"),
    ("contents empty", body(contents=[]), "empty"),
    ("unknown role", body(contents=[{"role": "system", "parts": [{"text": "x"}]}]), "role"),
    ("parts a string", body(contents=[{"role": "user", "parts": "x"}]), "parts"),
    ("text a number", body(contents=[{"role": "user", "parts": [{"text": 5}]}]), "text"),
    ("image", body(contents=[{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "AA"}}]}]),
     "text-only"),
    ("args a string", body(contents=[{"role": "model", "parts": [{"functionCall": {"name": "f", "args": "x"}}]}]),
     "args"),
    ("call without name", body(contents=[{"role": "model", "parts": [{"functionCall": {"args": {}}}]}]), "name"),
    ("unanswerable response", body(contents=[{"role": "user", "parts": [
        {"functionResponse": {"name": "f", "response": {}}}]}]), "functionResponse"),
    ("search tool", body(tools=[{"googleSearch": {}}]), "googleSearch"),
    ("declaration without name", body(tools=[{"functionDeclarations": [{"parameters": {}}]}]), "name"),
    ("two candidates", body(generationConfig={"candidateCount": 2}), "candidateCount"),
    ("maxOutputTokens zero", body(generationConfig={"maxOutputTokens": 0}), "maxOutputTokens"),
    ("stopSequences a string", body(generationConfig={"stopSequences": "x"}), "stopSequences"),
    ("bad calling mode", body(toolConfig={"functionCallingConfig": {"mode": "SOMETIMES"}}), "mode"),
]


def assert_google_error(status, payload, expected_status, expected, word="", case=""):
    assert status == expected_status, (case, payload)
    assert set(payload) == {"error"} and payload["error"]["code"] == expected_status, (case, payload)
    assert payload["error"]["status"] == expected, (case, payload)
    assert word.lower() in payload["error"]["message"].lower(), (case, payload)


async def test_malformed_bodies_get_google_shaped_400s(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    url = f"{rollout.root_url}/v1beta/models/policy:generateContent"
    async with aiohttp.ClientSession(headers={"x-goog-api-key": rollout.api_key,
                                              "Content-Type": "application/json"}) as session:
        for case, payload, word in MALFORMED:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            async with session.post(url, data=data) as resp:
                answer = await resp.json()
            assert_google_error(resp.status, answer, 400, "INVALID_ARGUMENT", word, case)
    assert rollout.pending == 0


async def test_the_gates_own_errors_in_googles_shape(make_gate):
    gate = await make_gate(max_body_bytes=4096, max_pending_per_rollout=1, queue_timeout_s=0.3)
    a = await gate.open_rollout("a")
    b = await gate.open_rollout("b")
    ok = json.dumps(body()).encode()
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:
        async def post(url, data=ok, **headers):
            async with session.post(url, data=data, headers=headers) as resp:
                return resp.status, await resp.json()

        url_a = f"{a.root_url}/v1beta/models/policy:generateContent"
        url_b = f"{b.root_url}/v1beta/models/policy:streamGenerateContent?alt=sse"
        assert_google_error(*await post(url_b), 401, "UNAUTHENTICATED", "missing")
        assert_google_error(*await post(url_b, **{"x-goog-api-key": a.api_key}), 401, "UNAUTHENTICATED")
        assert_google_error(*await post(f"{b.root_url}/v1beta/models/policy:countTokens?key={a.api_key}"),
                            401, "UNAUTHENTICATED")
        assert_google_error(*await post(f"{a.root_url}/v1beta/models/policy:embedContent",
                                        **{"x-goog-api-key": a.api_key}), 404, "NOT_FOUND", "embedContent")
        assert_google_error(*await post(f"{a.root_url}/v1beta/cachedContents", **{"x-goog-api-key": a.api_key}),
                            404, "NOT_FOUND")
        async with session.get(url_a, headers={"x-goog-api-key": a.api_key}) as resp:
            assert_google_error(resp.status, await resp.json(), 405, "INVALID_ARGUMENT")
        big = json.dumps(body(contents=[{"role": "user", "parts": [{"text": "x" * 5000}]}])).encode()
        assert_google_error(*await post(url_a, big, **{"x-goog-api-key": a.api_key}), 413, "INVALID_ARGUMENT")
        # 503: nobody takes the call off the queue in time; meanwhile a second call exceeds the pending limit (429)
        first = asyncio.create_task(post(f"{url_a}?key={a.api_key}"))
        while a.pending == 0:
            await asyncio.sleep(0.01)
        assert_google_error(*await post(url_a, **{"x-goog-api-key": a.api_key}), 429, "RESOURCE_EXHAUSTED")
        assert_google_error(*await first, 503, "UNAVAILABLE")
        await a.close()  # a closed rollout: 404 for the right key
        assert_google_error(*await post(url_a, **{"x-goog-api-key": a.api_key}), 404, "NOT_FOUND")
    wrong = genai.Client(api_key="irl-wrong", http_options=types.HttpOptions(
        base_url=b.root_url, timeout=5_000, retry_options=types.HttpRetryOptions(attempts=1)))
    with pytest.raises(errors.ClientError) as info:
        await wrong.aio.models.generate_content(model="policy", contents="hi")
    assert info.value.code == 401 and info.value.status == "UNAUTHENTICATED"
    with pytest.raises(errors.ClientError) as info:
        await client_for(a).aio.models.generate_content(model="policy", contents="hi")
    assert info.value.code == 404 and info.value.status == "NOT_FOUND"


async def test_request_timeout_is_a_504_deadline_exceeded(make_gate):
    gate = await make_gate(request_timeout_s=0.3)
    rollout = await gate.open_rollout("r1")
    taker = asyncio.create_task(rollout.next_request(timeout=5))  # taken, never answered
    with pytest.raises(errors.ServerError) as info:
        await client_for(rollout).aio.models.generate_content(model="policy", contents="hi")
    await taker
    assert info.value.code == 504 and info.value.status == "DEADLINE_EXCEEDED"


async def test_v1_root_and_query_key_are_accepted(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    worker = asyncio.create_task(answer_one(rollout, {"role": "assistant", "content": "hi"}, "stop"))
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{rollout.root_url}/v1/models/models/policy:generateContent?key={rollout.api_key}",
                                json=body()) as resp:
            answer = await resp.json()
    req = await worker
    assert resp.status == 200 and answer["candidates"][0]["content"]["parts"] == [{"text": "hi"}]
    assert req.model == "policy"


# -- a full rollout through the real worker and engine, spoken in the Gemini API --------------------------------------
def scripted_gemini_like_agent(endpoint, stream: bool, turns: int = 3) -> None:
    """Three turns the way Gemini CLI talks: system instruction, function declarations, our reply echoed without its
    thoughts, function responses (or a user text when the model called nothing)."""
    client = genai.Client(api_key=endpoint.api_key, http_options=types.HttpOptions(
        base_url=endpoint.base_url.removesuffix("/v1"), timeout=120_000,
        retry_options=types.HttpRetryOptions(attempts=1)))
    contents = [types.Content(role="user", parts=[types.Part(text="Fix the failing test in repo/.")])]
    settings = config(temperature=0.2, max_output_tokens=24)  # sampling: ignored by the worker
    for turn in range(turns):
        if stream:
            reply = reassemble(list(client.models.generate_content_stream(model=endpoint.model, contents=contents,
                                                                          config=settings)))
        else:
            reply = client.models.generate_content(model=endpoint.model, contents=contents,
                                                   config=settings).candidates[0].content
        contents.append(types.Content(role="model", parts=[p for p in reply.parts if not p.thought]))
        calls = [p.function_call for p in reply.parts if p.function_call]
        contents.append(types.Content(role="user", parts=[
            types.Part(function_response=types.FunctionResponse(id=c.id, name=c.name,
                                                                response={"output": f"ran turn {turn}"}))
            for c in calls] or [types.Part(text=f"Observation {turn}: ok")]))
    client.close()


@pytest.mark.slow
def test_full_rollouts_over_gemini_are_token_exact(engine, tiny_model_dir):
    from tests.support.dialects import SdkAgentRunner, assert_token_exact, run_rollouts

    records = run_rollouts(engine.url, SdkAgentRunner(scripted_gemini_like_agent, [False, True]), n=2)
    assert sorted(r["agent_output"] for r in records) == ["False", "True"]  # one rollout streamed, one did not
    assert_token_exact(records, tiny_model_dir, turns=3)
