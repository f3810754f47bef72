"""Per-rollout and global resource bounds: each gives a clear 413/429/503 in the caller's dialect and leaves other
rollouts untouched. Plus regression tests for what the hostile-request suite found."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from .gate_under_test import ROUTES


async def _post(http: aiohttp.ClientSession, url: str, key: str, body: object) -> tuple[int, dict, dict]:
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def _answer_all(rollout) -> None:
    while True:
        request = await rollout.next_request(timeout=None)
        await request.reply({"content": "ok"}, usage={"prompt_tokens": 1, "completion_tokens": 1})


async def test_a_rollout_over_its_rate_gets_429_with_retry_after_and_others_are_untouched(make_gate):
    gate = await make_gate(rollout_requests_per_s=2.0, rollout_request_burst=5)
    noisy, quiet = await gate.open_rollout("noisy"), await gate.open_rollout("quiet")
    workers = [asyncio.create_task(_answer_all(r)) for r in (noisy, quiet)]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            statuses = [(await _post(http, f"{noisy.base_url}/chat/completions", noisy.api_key,
                                     ROUTES["chat/completions"]))[:3] for _ in range(12)]
            assert [s for s, _, _ in statuses[:5]] == [200] * 5  # the burst
            limited = [(body, headers) for s, body, headers in statuses if s == 429]
            assert len(limited) >= 6
            body, headers = limited[0]
            assert body["error"]["code"] == "rate_limited" and int(headers["Retry-After"]) >= 1
            # In Anthropic's shape on the Messages route.
            status, body, _ = await _post(http, f"{noisy.base_url}/messages", noisy.api_key, ROUTES["messages"])
            assert status == 429 and body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
            # The other rollout is served as usual.
            for _ in range(5):
                status, body, _ = await _post(http, f"{quiet.base_url}/chat/completions", quiet.api_key,
                                              ROUTES["chat/completions"])
                assert status == 200 and body["choices"][0]["message"]["content"] == "ok"
            await asyncio.sleep(1.1)  # the bucket refills at its rate
            status, _, _ = await _post(http, f"{noisy.base_url}/chat/completions", noisy.api_key,
                                       ROUTES["chat/completions"])
            assert status == 200
        assert gate.metrics["rate_limited_total"] >= 7
    finally:
        for worker in workers:
            worker.cancel()


async def test_the_gate_bounds_pending_requests_across_rollouts(make_gate):
    """With nobody answering, requests pile up to `max_pending_total`; the next gets 503 + Retry-After."""
    gate = await make_gate(max_pending_total=3, max_pending_per_rollout=2, queue_timeout_s=5)
    rollouts = [await gate.open_rollout(f"r{i}") for i in range(3)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        held = [asyncio.create_task(_post(http, f"{r.base_url}/chat/completions", r.api_key,
                                          ROUTES["chat/completions"])) for r in rollouts]
        while gate.pending_requests < 3:
            await asyncio.sleep(0.01)
        status, body, headers = await _post(http, f"{rollouts[0].base_url}/chat/completions", rollouts[0].api_key,
                                            ROUTES["chat/completions"])
        assert status == 503 and body["error"]["code"] == "gate_overloaded" and headers["Retry-After"] == "1"
        for rollout in rollouts:
            await rollout.close()
        results = await asyncio.gather(*held)
        assert [s for s, _, _ in results] == [404] * 3  # failed at once by the close, never hung
    assert gate.pending_requests == 0


async def test_an_oversized_body_is_413_in_the_routes_dialect(make_gate):
    gate = await make_gate(max_body_bytes=2048)
    rollout = await gate.open_rollout("big")
    huge = {**ROUTES["messages"], "system": "x" * 5000}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        status, body, _ = await _post(http, f"{rollout.base_url}/messages", rollout.api_key, huge)
    assert status == 413 and body["type"] == "error" and body["error"]["type"] == "request_too_large"


async def test_regression_a_message_role_of_the_wrong_type_is_a_400_not_a_500(make_gate):
    """Found by the hostile-request suite: `{"role": [...]}` reached a set lookup and raised TypeError (500)."""
    gate = await make_gate()
    rollout = await gate.open_rollout("role")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for role in ([], {"a": 1}, ["user"]):
            body = {"model": "policy", "messages": [{"role": role, "content": "hi"}]}
            status, answer, _ = await _post(http, f"{rollout.base_url}/chat/completions", rollout.api_key, body)
            assert status == 400 and "role" in answer["error"]["message"], (role, status, answer)


async def test_many_connections_on_one_rollout_are_bounded_and_others_unaffected(make_gate):
    """50 concurrent calls on one rollout: `max_pending_per_rollout` wait, the rest get 429 at once; another rollout
    is answered meanwhile."""
    gate = await make_gate(max_pending_per_rollout=4, queue_timeout_s=5, rollout_request_burst=1000,
                           rollout_requests_per_s=1000)
    crowded, calm = await gate.open_rollout("crowded"), await gate.open_rollout("calm")
    calm_worker = asyncio.create_task(_answer_all(calm))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), connector=connector) as http:
        crowd = [asyncio.create_task(_post(http, f"{crowded.base_url}/chat/completions", crowded.api_key,
                                           ROUTES["chat/completions"])) for _ in range(50)]
        while crowded.pending < 4:
            await asyncio.sleep(0.01)
        status, body, _ = await _post(http, f"{calm.base_url}/chat/completions", calm.api_key,
                                      ROUTES["chat/completions"])
        assert status == 200 and body["choices"][0]["message"]["content"] == "ok"
        await crowded.close()
        statuses = [s for s, _, _ in await asyncio.gather(*crowd)]
    calm_worker.cancel()
    assert statuses.count(429) == 46 and statuses.count(404) == 4, statuses


async def test_a_stalled_reader_does_not_hold_the_gate(make_gate):
    """A client that asks for a stream and never reads a byte: the call is answered into the socket, the handler
    finishes, nothing stays pending; a slowloris body is cut at `body_timeout_s` (408)."""
    gate = await make_gate(body_timeout_s=0.5, keepalive_interval_s=0.05)
    rollout = await gate.open_rollout("stalled")
    worker = asyncio.create_task(_answer_all(rollout))
    body = json.dumps({**ROUTES["chat/completions"], "stream": True}).encode()
    head = (f"POST /rollout/stalled/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            f"{rollout.api_key}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", gate.port)
    writer.write(head + body)
    await writer.drain()  # ... and never read
    deadline = asyncio.get_running_loop().time() + 10
    while gate.metrics["requests_total"].get("chat_completions 200", 0) < 1:
        assert asyncio.get_running_loop().time() < deadline, gate.metrics
        await asyncio.sleep(0.05)
    assert gate.pending_requests == 0
    slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", gate.port)
    slow_writer.write(head)  # headers, then the body never comes
    await slow_writer.drain()
    answer = await asyncio.wait_for(slow_reader.read(4096), timeout=10)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    for w in (writer, slow_writer):
        w.close()
    worker.cancel()
