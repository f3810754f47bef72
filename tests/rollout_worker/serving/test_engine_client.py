"""EngineClient against the real local engine, and against a scripted aiohttp stand-in for vLLM that misbehaves
(null logprobs, missing ids, 5xx, dropped connections) to prove the guards and the retry rule."""

from __future__ import annotations

import asyncio
import socket

import pytest
import torch
from aiohttp import web
from transformers import AutoModelForCausalLM

from local_engine.background import BackgroundEngine
from local_engine.cli import create_engine_server
from local_engine.server import EngineConfig
from rollout_worker.protocols import EngineError, EngineResponseError, PromptTooLongError
from rollout_worker.serving.engine_client import EngineClient
from rollout_worker.types import Completion

MAX_MODEL_LEN = 256


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    config = EngineConfig(model=str(tiny_model_dir), served_model_name="policy", max_model_len=MAX_MODEL_LEN)
    with BackgroundEngine(create_engine_server(config)) as background:
        yield background


# ---- against the real local engine ----------------------------------------------------------------------------------
async def test_complete_against_local_engine_matches_teacher_forcing(engine, tiny_model_dir):
    prompt = list(range(1000, 1030))
    async with EngineClient(engine.url + "/v1", "policy") as client:  # the OpenAI-style base URL works too
        assert await client.max_model_len() == MAX_MODEL_LEN
        completion = await client.complete(prompt, max_tokens=12, temperature=0.9, seed=5)
    assert isinstance(completion, Completion)
    assert len(completion.token_ids) == len(completion.logprobs) == 12
    assert completion.finish_reason == "length" and completion.prompt_tokens == 30 and completion.latency_s > 0
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = reference(torch.tensor([prompt + completion.token_ids])).logits[0, 29:-1] / 0.9
    expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(completion.token_ids)[:, None])[:, 0]
    assert max(abs(a - b) for a, b in zip(completion.logprobs, expected.tolist())) < 1e-5


async def test_stop_token_and_seed_are_forwarded(engine):
    async with EngineClient(engine.url, "policy") as client:
        free = await client.complete([5, 6, 7], max_tokens=6, seed=9)
        stop = free.token_ids[2]
        stopped = await client.complete([5, 6, 7], max_tokens=6, seed=9, stop_token_ids=[stop])
    assert stopped.token_ids == free.token_ids[: free.token_ids.index(stop) + 1] and stopped.finish_reason == "stop"


async def test_local_engine_context_400_is_prompt_too_long(engine):
    async with EngineClient(engine.url, "policy", max_retries=0) as client:
        with pytest.raises(PromptTooLongError) as caught:
            await client.complete(list(range(250)), max_tokens=10)
    assert caught.value.prompt_tokens == 250 and caught.value.max_model_len == MAX_MODEL_LEN
    assert caught.value.status == 400


async def test_other_4xx_is_an_engine_error_without_retry(engine):
    async with EngineClient(engine.url, "not-served", max_retries=3, backoff_s=5.0) as client:
        with pytest.raises(EngineError) as caught:
            await asyncio.wait_for(client.complete([1, 2], max_tokens=2), timeout=4)  # a retry would sleep 5 s
        assert caught.value.status == 404 and not isinstance(caught.value, PromptTooLongError)
        with pytest.raises(EngineError, match="does not serve model 'not-served'"):
            await client.max_model_len()


# ---- against a misbehaving stand-in ---------------------------------------------------------------------------------
def _good_body(prompt, ids=(11, 12), logprobs=(-0.5, -1.5)):
    return {
        "id": "cmpl-1", "object": "text_completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "text": "", "finish_reason": "stop", "token_ids": list(ids),
                     "prompt_token_ids": list(prompt),
                     "logprobs": {"token_logprobs": list(logprobs), "tokens": ["a", "b"], "text_offset": [0, 1],
                                  "top_logprobs": [None, None]}}],
        "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(ids), "total_tokens": len(prompt) + 2},
    }


class StandIn:
    """A scripted `/v1/completions`: each call pops the next behaviour; records every request body."""

    def __init__(self, script):
        self.script = list(script)
        self.bodies: list[dict] = []

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        action = self.script.pop(0) if self.script else "ok"
        if action == "ok":
            return web.json_response(_good_body(body["prompt"]))
        if action == "drop":  # the connection dies before any answer
            request.transport.close()
            return web.Response()
        if isinstance(action, int):
            return web.json_response({"error": {"message": f"status {action}", "type": "X", "code": action}},
                                     status=action)
        if action == "vllm-context":
            message = ("This model's maximum context length is 4096 tokens. However, you requested 64 output tokens "
                       "and your prompt contains at least 4100 input tokens, for a total of at least 4164 tokens. "
                       "Please reduce the length of the input prompt or the number of requested output tokens.")
            return web.json_response({"error": {"message": message, "type": "BadRequestError", "param": "input_tokens",
                                                "code": 400}}, status=400)
        if action == "slow":
            await asyncio.sleep(2)
            return web.json_response(_good_body(body["prompt"]))
        if action == "not-json":
            return web.Response(text="<html>proxy error</html>", content_type="text/html")
        return web.json_response(action(body["prompt"]))  # a callable builds a (malformed) body


@pytest.fixture
async def stand_in():
    runners = []

    async def start(script):
        fake = StandIn(script)
        app = web.Application()
        app.router.add_post("/v1/completions", fake.completions)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return fake, f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_more_than_a_hundred_calls_reach_the_engine_at_once():
    """aiohttp's default pool has 100 connections: a 101st call would wait inside the client, unseen by the engine's
    scheduler. The worker bounds the calls in flight (max_inflight); the client must not add a bound of its own."""
    calls, in_flight, peak = 120, 0, 0
    everyone_in = asyncio.Event()

    async def completions(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        body = await request.json()
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight >= calls:
            everyone_in.set()
        try:
            await asyncio.wait_for(everyone_in.wait(), 5)
        except asyncio.TimeoutError:
            pass
        in_flight -= 1
        return web.json_response(_good_body(body["prompt"]))

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async with EngineClient(f"http://127.0.0.1:{runner.addresses[0][1]}", "m", timeout_s=30) as client:
            await asyncio.gather(*(client.complete([1, 2], max_tokens=2) for _ in range(calls)))
    finally:
        await runner.cleanup()
    assert peak == calls


async def test_request_payload_asks_for_token_ids_and_logprobs(stand_in):
    fake, url = await stand_in(["ok"])
    async with EngineClient(url, "m") as client:
        await client.complete([1, 2, 3], max_tokens=7, temperature=0.6, top_p=0.9, top_k=0)
    (body,) = fake.bodies
    assert body == {"model": "m", "prompt": [1, 2, 3], "max_tokens": 7, "temperature": 0.6, "top_p": 0.9,
                    "top_k": -1, "n": 1, "logprobs": 0, "return_token_ids": True, "stream": False}


@pytest.mark.parametrize("status", [502, 503])
async def test_502_and_503_are_retried_with_backoff(stand_in, status):
    fake, url = await stand_in([status, status, "ok"])
    async with EngineClient(url, "m", max_retries=3, backoff_s=0.01) as client:
        completion = await client.complete([1, 2], max_tokens=2)
    assert completion.token_ids == [11, 12] and len(fake.bodies) == 3


async def test_dropped_connections_are_retried_then_reported(stand_in):
    fake, url = await stand_in(["drop", "ok"])
    async with EngineClient(url, "m", max_retries=2, backoff_s=0.01) as client:
        assert (await client.complete([1], max_tokens=2)).logprobs == [-0.5, -1.5]
    fake, url = await stand_in(["drop", "drop", "drop"])
    async with EngineClient(url, "m", max_retries=2, backoff_s=0.01) as client:
        with pytest.raises(EngineError, match="after 3 attempts"):
            await client.complete([1], max_tokens=2)
    assert len(fake.bodies) == 3


async def test_connection_refused_is_retried_then_reported():
    with socket.socket() as sock:  # a port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with EngineClient(f"http://127.0.0.1:{port}", "m", max_retries=2, backoff_s=0.01) as client:
        with pytest.raises(EngineError, match=r"after 3 attempts; last: Client\w*Error"):
            await client.complete([1], max_tokens=2)


@pytest.mark.parametrize("status", [400, 401, 404, 422, 500])
async def test_4xx_and_500_are_not_retried(stand_in, status):
    fake, url = await stand_in([status, "ok"])
    async with EngineClient(url, "m", max_retries=3, backoff_s=0.01) as client:
        with pytest.raises(EngineError) as caught:
            await client.complete([1], max_tokens=2)
    assert caught.value.status == status and f"status {status}" in str(caught.value)
    assert not isinstance(caught.value, PromptTooLongError) and len(fake.bodies) == 1


async def test_vllm_old_context_message_is_prompt_too_long(stand_in):
    fake, url = await stand_in(["vllm-context"])
    async with EngineClient(url, "m") as client:
        with pytest.raises(PromptTooLongError) as caught:
            await client.complete([1], max_tokens=64)
    assert caught.value.prompt_tokens == 4100 and caught.value.max_model_len == 4096 and len(fake.bodies) == 1


async def test_timeout_is_an_engine_error_not_retried(stand_in):
    fake, url = await stand_in(["slow", "ok"])
    async with EngineClient(url, "m", timeout_s=0.5, max_retries=3, backoff_s=0.01) as client:
        with pytest.raises(EngineError, match="timed out"):
            await client.complete([1], max_tokens=2)
    assert len(fake.bodies) == 1


def _null_logprob(prompt):
    body = _good_body(prompt)
    body["choices"][0]["logprobs"]["token_logprobs"][1] = None
    return body


def _no_logprobs(prompt):
    body = _good_body(prompt)
    body["choices"][0]["logprobs"] = None
    return body


def _no_token_ids(prompt):
    body = _good_body(prompt)
    del body["choices"][0]["token_ids"]
    return body


def _length_mismatch(prompt):
    return _good_body(prompt, ids=(11, 12, 13))


def _other_prompt(prompt):
    body = _good_body(prompt)
    body["choices"][0]["prompt_token_ids"] = list(prompt) + [99]
    return body


def _no_choices(prompt):
    return {"choices": []}


def _infinite_logprob(prompt):
    return _good_body(prompt, logprobs=(-0.5, float("-inf")))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_null_logprob, r"token_logprobs\[1\] is None"),
        (_no_logprobs, "logprobs.token_logprobs is missing"),
        (_no_token_ids, "token_ids is missing"),
        (_length_mismatch, "3 token ids but 2 logprobs"),
        (_other_prompt, "prompt_token_ids differ"),
        (_no_choices, r"no choices\[0\]"),
        (_infinite_logprob, "not a finite number"),
        ("not-json", "not JSON"),
    ],
)
async def test_malformed_answers_are_clear_response_errors(stand_in, build, message):
    fake, url = await stand_in([build])
    async with EngineClient(url, "m", backoff_s=0.01) as client:
        with pytest.raises(EngineResponseError, match=message):
            await client.complete([1, 2], max_tokens=2)
    assert len(fake.bodies) == 1  # a malformed 200 is not retried


async def test_close_is_idempotent_and_the_client_reopens(stand_in):
    fake, url = await stand_in(["ok", "ok"])
    client = EngineClient(url, "m")
    await client.complete([1], max_tokens=2)
    await client.close()
    await client.close()
    await client.complete([1], max_tokens=2)
    await client.close()
    assert len(fake.bodies) == 2
