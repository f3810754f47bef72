"""The gate's Gemini dialect through the official Google Gen AI SDK (`google-genai`) against the real aiohttp gate on
loopback: generateContent and streamGenerateContent (SSE), function calls reassembled exactly, the function response
turn mapped onto the exact internal conversation, thoughts, finish reasons, usage, countTokens, truncation reporting per
rollout, and a full token-exact rollout through the real worker and engine. Errors: test_gate_gemini_errors.py."""

from __future__ import annotations

import asyncio

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
