"""Closing, disconnects, timeouts, keep-alives and shutdown: every wait ends, promptly and visibly."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import openai
import pytest

from control_plane import GateConfig, InterceptionServer, RolloutClosed
from tests.support.background_gate import BackgroundGate

BODY = {"model": "policy", "messages": [{"role": "user", "content": "hi"}]}
STREAM_BODY = {**BODY, "stream": True, "stream_options": {"include_usage": True}}


def headers(rollout) -> dict:
    return {"Authorization": f"Bearer {rollout.api_key}"}


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))


async def read_events(resp) -> list[str]:
    """Raw SSE lines, comments included, until the server ends the stream."""
    return [line.decode().rstrip("\n") async for line in resp.content if line.strip()]


async def test_close_fails_taken_and_queued_requests_at_once(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    idle = await gate.open_rollout("r2")
    client = openai.AsyncOpenAI(base_url=rollout.base_url, api_key=rollout.api_key, max_retries=0, timeout=10)
    calls = [asyncio.create_task(client.chat.completions.create(**BODY)) for _ in range(2)]
    taken = await rollout.next_request(timeout=5)  # one taken by the worker, one left in the queue
    for _ in range(100):
        if rollout.pending == 2:
            break
        await asyncio.sleep(0.01)
    assert gate.pending_requests == 2
    waiter = asyncio.create_task(idle.next_request(timeout=30))  # a worker blocked on an empty queue
    await asyncio.sleep(0.05)
    start = time.monotonic()
    await rollout.close()
    await idle.close()
    for call in calls:
        with pytest.raises(openai.NotFoundError) as info:
            await call
        assert info.value.code == "rollout_closed"
    with pytest.raises(RolloutClosed):
        await waiter
    assert time.monotonic() - start < 1.0
    assert taken.disconnected.is_set() and taken.end_reason == "rollout_closed"
    assert not await taken.reply({"role": "assistant", "content": "too late"})
    with pytest.raises(RolloutClosed):
        await rollout.next_request(timeout=1)  # the queued request is not handed out after close
    assert gate.open_rollouts == 0 and gate.pending_requests == 0
    await client.close()


async def test_close_ends_an_open_sse_stream_with_an_error_event(make_gate):
    gate = await make_gate(keepalive_interval_s=0.05)
    rollout = await gate.open_rollout("r1")
    async with session() as http:
        url = f"{rollout.base_url}/chat/completions"
        async with http.post(url, json=STREAM_BODY, headers=headers(rollout)) as resp:
            assert resp.status == 200 and resp.content_type == "text/event-stream"
            first = await asyncio.wait_for(resp.content.readline(), 2)
            assert first == b": keep-alive\n"  # the stream is open and waiting
            req = await rollout.next_request(timeout=1)
            start = time.monotonic()
            await rollout.close()
            rest = await asyncio.wait_for(read_events(resp), 2)
            elapsed = time.monotonic() - start
    assert elapsed < 1.0
    data = [line for line in rest if line.startswith("data: ")]
    assert len(data) == 1 and json.loads(data[0][6:])["error"]["code"] == "rollout_closed"
    assert req.end_reason == "rollout_closed"


async def test_sdk_stream_raises_when_the_rollout_closes_mid_stream(make_gate):
    gate = await make_gate(keepalive_interval_s=0.05)
    rollout = await gate.open_rollout("r1")
    client = openai.AsyncOpenAI(base_url=rollout.base_url, api_key=rollout.api_key, max_retries=0, timeout=10)
    stream = await client.chat.completions.create(**STREAM_BODY)  # returns once headers (first keep-alive) arrive
    await rollout.next_request(timeout=1)
    closer = asyncio.get_running_loop().call_later(0.1, lambda: asyncio.ensure_future(rollout.close()))
    start = time.monotonic()
    with pytest.raises(openai.APIError, match="closed"):
        async for _ in stream:
            pass
    assert time.monotonic() - start < 1.0
    closer.cancel()
    await client.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_client_disconnect_reaches_the_worker(make_gate, stream):
    gate = await make_gate(keepalive_interval_s=0.05)
    rollout = await gate.open_rollout("r1")
    body = STREAM_BODY if stream else BODY

    async def call():
        async with session() as http:
            async with http.post(f"{rollout.base_url}/chat/completions", json=body, headers=headers(rollout)) as r:
                await r.read()

    client_task = asyncio.create_task(call())
    req = await rollout.next_request(timeout=5)
    if stream:
        await asyncio.sleep(0.2)  # let keep-alives flow first
    assert not req.disconnected.is_set()
    client_task.cancel()
    await asyncio.wait_for(req.disconnected.wait(), 2)
    assert req.end_reason == "client_disconnected"
    assert not await req.reply({"role": "assistant", "content": "nobody listens"})
    assert gate.pending_requests == 0 and gate.metrics["disconnects_total"] == 1
    # the rollout keeps working for the next call
    async with session() as http:
        call = asyncio.create_task(http.post(f"{rollout.base_url}/chat/completions", json=BODY,
                                             headers=headers(rollout)))
        nxt = await rollout.next_request(timeout=5)
        await nxt.reply({"role": "assistant", "content": "ok"})
        resp = await call
        assert resp.status == 200 and (await resp.json())["choices"][0]["message"]["content"] == "ok"
        resp.release()


async def test_keepalive_comments_arrive_while_the_reply_is_slow(make_gate):
    gate = await make_gate(keepalive_interval_s=0.1)
    rollout = await gate.open_rollout("r1")

    async def slow_worker():
        req = await rollout.next_request(timeout=5)
        await asyncio.sleep(0.55)
        await req.reply({"role": "assistant", "content": "slow but sure"}, usage={"prompt_tokens": 3,
                                                                                  "completion_tokens": 4})

    worker = asyncio.create_task(slow_worker())
    async with session() as http:
        url = f"{rollout.base_url}/chat/completions"
        async with http.post(url, json=STREAM_BODY, headers=headers(rollout)) as resp:
            lines = await read_events(resp)
    await worker
    keepalives = [line for line in lines if line == ": keep-alive"]
    assert 2 <= len(keepalives) <= 8  # ~5 expected; loose for a loaded CI box
    data = [line for line in lines if line.startswith("data: ")]
    assert lines.index(keepalives[-1]) < lines.index(data[0])  # keep-alives only before the reply
    assert data[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in data[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "slow but sure"
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


async def test_request_and_queue_timeouts_answer_instead_of_hanging(make_gate):
    gate = await make_gate(request_timeout_s=0.4, queue_timeout_s=0.2, keepalive_interval_s=0.1)
    rollout = await gate.open_rollout("r1")
    async with session() as http:
        url = f"{rollout.base_url}/chat/completions"
        # nobody takes it: 503 after the queue timeout
        start = time.monotonic()
        async with http.post(url, json=BODY, headers=headers(rollout)) as resp:
            assert resp.status == 503 and (await resp.json())["error"]["code"] == "queue_timeout"
        assert 0.15 < time.monotonic() - start < 1.0
        # taken but never answered: 504 (JSON), and an SSE error event once the stream has started
        for body in (BODY, STREAM_BODY):
            call = asyncio.create_task(http.post(url, json=body, headers=headers(rollout)))
            req = await rollout.next_request(timeout=2)
            resp = await call
            if body is BODY:
                assert resp.status == 504 and (await resp.json())["error"]["code"] == "request_timeout"
            else:
                lines = await read_events(resp)
                assert json.loads(lines[-1][6:])["error"]["code"] == "request_timeout"
            resp.release()
            assert req.disconnected.is_set() and req.end_reason == "timeout"
    assert gate.metrics["timeouts_total"] == 3


async def test_pending_limit_answers_429(make_gate):
    gate = await make_gate(max_pending_per_rollout=2)
    rollout = await gate.open_rollout("r1")
    async with session() as http:
        url = f"{rollout.base_url}/chat/completions"
        calls = [asyncio.create_task(http.post(url, json=BODY, headers=headers(rollout))) for _ in range(2)]
        for _ in range(100):
            if rollout.pending == 2:
                break
            await asyncio.sleep(0.01)
        async with http.post(url, json=BODY, headers=headers(rollout)) as resp:
            assert resp.status == 429 and (await resp.json())["error"]["type"] == "rate_limit_error"
        for _ in calls:
            req = await rollout.next_request(timeout=2)
            await req.reply({"role": "assistant", "content": "ok"})
        for call in calls:
            resp = await call
            assert resp.status == 200
            resp.release()


async def test_bad_reply_raises_in_the_worker_and_the_request_stays_answerable(make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r1")
    async with session() as http:
        call = asyncio.create_task(http.post(f"{rollout.base_url}/chat/completions", json=BODY,
                                             headers=headers(rollout)))
        req = await rollout.next_request(timeout=5)
        for bad, kwargs in (({"role": "user", "content": "x"}, {}), ({"content": 5}, {}),
                            ({"content": "x"}, {"finish_reason": "maybe"}),
                            ({"tool_calls": [{"function": {"arguments": "{}"}}]}, {}),
                            ({"content": "x"}, {"usage": {"prompt_tokens": -1}}),
                            ({"content": "\ud800"}, {})):
            with pytest.raises(ValueError):
                await req.reply(bad, **kwargs)
        assert not req.done
        await req.reply({"role": "assistant", "content": "fine"})
        resp = await call
        assert (await resp.json())["choices"][0]["message"]["content"] == "fine"
        resp.release()


async def test_stop_closes_everything_and_rollout_ids_are_single_use():
    server = InterceptionServer(config=GateConfig(shutdown_timeout_s=1.0))
    with pytest.raises(RuntimeError):
        await server.open_rollout("early")
    await server.start()
    rollout = await server.open_rollout("r1")
    with pytest.raises(ValueError):
        await server.open_rollout("r1")
    for bad_id in ("", "../x", "a/b", "x" * 200, "-lead"):
        with pytest.raises(ValueError):
            await server.open_rollout(bad_id)
    assert "irl-" not in repr(rollout) and rollout.api_key not in repr(server)
    async with session() as http:
        call = asyncio.create_task(http.post(f"{rollout.base_url}/chat/completions", json=BODY,
                                             headers=headers(rollout)))
        req = await rollout.next_request(timeout=5)
        start = time.monotonic()
        await server.stop()
        resp = await asyncio.wait_for(call, 2)
        assert resp.status == 404 and "server stopping" in (await resp.json())["error"]["message"]
        resp.release()
        assert time.monotonic() - start < 1.5
        assert req.disconnected.is_set() and rollout.closed and server.open_rollouts == 0
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"{server.url}/healthz")
    await rollout.close()  # idempotent
    await server.stop()  # idempotent
    with pytest.raises(RuntimeError):
        await server.open_rollout("r2")


def test_background_gate_is_bounded_and_thread_safe():
    gate = BackgroundGate(call_timeout_s=5)
    with pytest.raises(RuntimeError):
        gate.open_rollout("x")  # not started
    url = gate.start()
    try:
        rollouts = [gate.open_rollout(f"r{i}") for i in range(3)]
        with pytest.raises(asyncio.TimeoutError):
            gate.run(rollouts[0].next_request(timeout=0.05))
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            gate.run(asyncio.sleep(10), timeout=0.1)  # a stuck coroutine cannot block the caller
        assert time.monotonic() - start < 1.0
        assert gate.run(asyncio.sleep(0, result=42)) == 42
        with pytest.raises(RuntimeError, match="event loop"):  # handles belong to the gate's loop
            asyncio.run(rollouts[2].close())
        assert not rollouts[2].closed
        gate.close_rollout(rollouts[1])
        gate.close_rollout("never-opened")
        assert gate.server.open_rollouts == 2 and url.startswith("http://127.0.0.1:")
    finally:
        gate.stop()
    gate.stop()  # idempotent
    assert not gate.running


async def test_a_trickling_body_gets_408_instead_of_holding_the_handler(make_gate):
    gate = await make_gate(body_timeout_s=0.3)
    rollout = await gate.open_rollout("r1")
    reader, writer = await asyncio.open_connection("127.0.0.1", gate.port)
    try:
        writer.write((f"POST /rollout/r1/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: Bearer {rollout.api_key}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: 1000\r\n\r\n" + '{"messages": [').encode())
        await writer.drain()
        start = time.monotonic()
        status_line = await asyncio.wait_for(reader.readline(), 3)
        assert b" 408 " in status_line and time.monotonic() - start < 2.0
        head, _, body = (await asyncio.wait_for(reader.read(), 3)).partition(b"\r\n\r\n")  # then closes
        assert json.loads(body)["error"]["code"] == "body_timeout"
    finally:
        writer.close()
    assert rollout.pending == 0
