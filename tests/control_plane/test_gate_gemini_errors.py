"""The gate's Gemini dialect, its errors: a worker's failure (as JSON, and inside a started stream), malformed bodies,
and every error path of the gate itself (401, 404, 405, 413, 429, 503, 504) in Google's shape
(`{"error": {"code", "message", "status"}}`), through the official `google-genai` SDK and raw HTTP; plus the `v1` root
and the `?key=` query form of the API key."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from google import genai
from google.genai import errors, types

from tests.control_plane.test_gate_gemini import CONTENTS, answer_one, client_for, generate


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
