"""The gate at the HTTP level with a raw aiohttp client: hostile input, auth, body cap, /healthz and /metrics."""

from __future__ import annotations

import asyncio
import json

import aiohttp

OK_MESSAGES = [{"role": "user", "content": "hi"}]


def body_with(**fields) -> bytes:
    return json.dumps({"model": "policy", "messages": OK_MESSAGES, **fields}).encode()


def messages_body(*messages) -> bytes:
    return json.dumps({"model": "policy", "messages": list(messages)}).encode()


# (name, request body bytes, expected status, a word the error message must contain)
MALFORMED = [
    ("not json", b"{\"messages\": [", 400, "JSON"),
    ("empty body", b"", 400, "empty"),
    ("json array body", b"[1, 2]", 400, "object"),
    ("json null body", b"null", 400, "object"),
    ("NaN literal", b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400, "JSON"),
    ("invalid utf-8", b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, "JSON"),
    ("lone surrogate", b'{"messages": [{"role": "user", "content": "\\ud800"}]}', 400, "JSON"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, 400, "nested"),
    ("messages missing", json.dumps({"model": "policy"}).encode(), 400, "messages"),
    ("messages not a list", body_with(messages="hello"), 400, "array"),
    ("messages empty", body_with(messages=[]), 400, "empty"),
    ("message not an object", messages_body("hello"), 400, "messages[0]"),
    ("unknown role", messages_body({"role": "wizard", "content": "x"}), 400, "role"),
    ("missing role", messages_body({"content": "x"}), 400, "role"),
    ("content wrong type", messages_body({"role": "user", "content": 42}), 400, "content"),
    ("user content null", messages_body({"role": "user", "content": None}), 400, "content"),
    ("image part", messages_body({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}), 400, "image"),
    ("part not an object", messages_body({"role": "user", "content": ["text"]}), 400, "content[0]"),
    ("text part without text", messages_body({"role": "user", "content": [{"type": "text"}]}), 400, "text"),
    ("tool message without tool_call_id", messages_body({"role": "tool", "content": "out"}), 400, "tool_call_id"),
    ("tool_calls not a list", messages_body({"role": "assistant", "content": None, "tool_calls": {}}), 400,
     "tool_calls"),
    ("tool_call without name", messages_body({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"arguments": "{}"}}]}), 400, "name"),
    ("tool_call dict arguments", messages_body({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "bash", "arguments": {"a": 1}}}]}), 400, "arguments"),
    ("tool_call without id", messages_body({"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "bash", "arguments": "{}"}}]}), 400, "id"),
    ("tool_calls on a user message", messages_body({"role": "user", "content": "x", "tool_calls": []}), 400,
     "assistant"),
    ("n > 1", body_with(n=2), 400, "'n'"),
    ("n = 0", body_with(n=0), 400, "'n'"),
    ("tools not a list", body_with(tools={"type": "function"}), 400, "tools"),
    ("tool without function", body_with(tools=[{"type": "function"}]), 400, "tools[0].function"),
    ("tool of another type", body_with(tools=[{"type": "retrieval", "function": {"name": "x"}}]), 400, "type"),
    ("stream not boolean", body_with(stream="yes"), 400, "stream"),
    ("stream_options not an object", body_with(stream=True, stream_options=True), 400, "stream_options"),
    ("temperature a string", body_with(temperature="hot"), 400, "temperature"),
    ("max_tokens a boolean", body_with(max_tokens=True), 400, "max_tokens"),
    ("max_tokens negative", body_with(max_tokens=-5), 400, "max_tokens"),
    ("stop of numbers", body_with(stop=[1, 2]), 400, "stop"),
    ("tool_choice a number", body_with(tool_choice=5), 400, "tool_choice"),
    ("model a number", body_with(model=7), 400, "model"),
]


def assert_openai_error(status: int, payload: dict, expected_status: int, word: str, case: str) -> None:
    assert status == expected_status, (case, status, payload)
    error = payload["error"]
    assert isinstance(error["message"], str) and word.lower() in error["message"].lower(), (case, error)
    assert isinstance(error["type"], str) and error["type"], (case, error)
    assert "code" in error, (case, error)


async def serve_forever(rollout, log):
    """A worker that answers every request with a fixed text reply and records what it saw."""
    while True:
        req = await rollout.next_request()
        log.append(req)
        await req.reply({"role": "assistant", "content": "pong"}, usage={"prompt_tokens": 1, "completion_tokens": 1})


async def test_hostile_requests_get_json_4xx_and_the_server_keeps_serving(make_gate):
    # Validation is under test here, not the per-rollout rate limit (tests/reliability/ covers that): lift it.
    gate = await make_gate(max_body_bytes=1024 * 1024, rollout_requests_per_s=1e6, rollout_request_burst=10**6)
    rollout = await gate.open_rollout("r1")
    seen: list = []
    worker = asyncio.create_task(serve_forever(rollout, seen))
    chat = f"{rollout.base_url}/chat/completions"
    auth = {"Authorization": f"Bearer {rollout.api_key}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for case, body, status, word in MALFORMED:
            async with http.post(chat, data=body, headers={**auth, "Content-Type": "application/json"}) as resp:
                assert resp.content_type == "application/json", case
                assert_openai_error(resp.status, await resp.json(), status, word, case)
        http_cases = [
            ("wrong method", "GET", chat, auth, None, 405, "not allowed"),
            ("unknown route", "GET", f"{gate.url}/v1/chat/completions", auth, None, 404, "no such route"),
            ("unknown route under rollout", "POST", f"{rollout.base_url}/completions", auth, body_with(), 404,
             "no such route"),
            ("missing key", "POST", chat, {}, body_with(), 401, "missing"),
            ("wrong key", "POST", chat, {"Authorization": "Bearer irl-0000"}, body_with(), 401, "invalid"),
            ("basic auth", "POST", chat, {"Authorization": f"Basic {rollout.api_key}"}, body_with(), 401, "missing"),
            ("key of an unopened id", "POST", f"{gate.url}/rollout/nope/v1/chat/completions", auth, body_with(), 401,
             "invalid"),
            ("body over the cap", "POST", chat, auth, b" " * (1024 * 1024 + 1), 413, "too large"),
        ]
        for case, method, url, headers, body, status, word in http_cases:
            async with http.request(method, url, data=body, headers=headers) as resp:
                assert resp.content_type == "application/json", case
                assert_openai_error(resp.status, await resp.json(), status, word, case)

        async def chunked_body():  # no Content-Length: the cap must hold while reading
            for _ in range(20):
                yield b" " * 65536
        async with http.post(chat, data=chunked_body(), headers=auth) as resp:
            assert_openai_error(resp.status, await resp.json(), 413, "too large", "chunked body over the cap")

        assert seen == [] and rollout.pending == 0  # nothing malformed ever reached the worker
        # x-api-key works too, and the server still serves
        async with http.post(chat, data=body_with(), headers={"x-api-key": rollout.api_key}) as resp:
            assert resp.status == 200
            assert (await resp.json())["choices"][0]["message"]["content"] == "pong"
        assert len(seen) == 1
    assert len(MALFORMED) + len(http_cases) + 1 >= 20
    counts = gate.metrics["requests_total"]
    assert counts["chat_completions 400"] == len(MALFORMED)
    assert counts["chat_completions 413"] == 2 and counts["chat_completions 200"] == 1
    worker.cancel()


async def test_extra_keys_everywhere_are_accepted(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    seen: list = []
    worker = asyncio.create_task(serve_forever(rollout, seen))
    body = {
        "model": "policy", "store": False, "metadata": {"k": "v"}, "stream_options": None, "user": "u",
        "temperature": None,
        "messages": [
            {"role": "developer", "content": "be brief", "cache_control": {"type": "ephemeral"}},
            {"role": "user", "content": [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": "", "provider_specific_fields": {}, "reasoning_content": "r"},
            {"role": "user", "content": "b", "name": "alice"},
        ],
    }
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.post(f"{rollout.base_url}/chat/completions", json=body,
                             headers={"Authorization": f"Bearer {rollout.api_key}"}) as resp:
            assert resp.status == 200, await resp.text()
    assert seen[0].messages == body["messages"] and seen[0].params == {}
    worker.cancel()


async def test_healthz_and_metrics_content(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("secret-rollout-name")
    seen: list = []
    worker = asyncio.create_task(serve_forever(rollout, seen))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.post(f"{rollout.base_url}/chat/completions", data=body_with(),
                             headers={"Authorization": f"Bearer {rollout.api_key}"}) as resp:
            assert resp.status == 200
        async with http.get(f"{rollout.base_url}/models", headers={"x-api-key": "bad"}) as resp:
            assert resp.status == 401
        async with http.get(f"{gate.url}/healthz") as resp:
            assert resp.status == 200
            health_text = await resp.text()
        async with http.get(f"{gate.url}/metrics") as resp:
            assert resp.status == 200 and resp.content_type == "text/plain"
            metrics = await resp.text()
    health = json.loads(health_text)
    assert health["status"] == "ok" and health["open_rollouts"] == 1 and health["pending_requests"] == 0
    for text in (health_text, metrics):
        assert "secret-rollout-name" not in text and rollout.api_key not in text and "irl-" not in text
        assert gate._secret.hex() not in text
    lines = metrics.splitlines()
    assert 'gate_requests_total{route="chat_completions",status="200"} 1' in lines
    assert 'gate_requests_total{route="models",status="401"} 1' in lines
    assert 'gate_request_duration_seconds_count{route="chat_completions"} 1' in lines
    assert 'gate_request_duration_seconds_bucket{route="chat_completions",le="+Inf"} 1' in lines
    assert "# TYPE gate_request_duration_seconds histogram" in lines
    assert "gate_open_rollouts 1" in lines and "gate_pending_requests 0" in lines
    # every sample line is `name{labels} number`
    for line in lines:
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])
    worker.cancel()
