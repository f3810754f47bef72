"""An engine stand-in for benchmarks: answers at once, so only our own overhead is measured.

It speaks the vLLM subset the worker uses — `GET /v1/models` (with `max_model_len`) and `POST /v1/completions`
with a token-id prompt, answering fixed sampled ids and their logprobs in vLLM's shape (`choices[0].token_ids`,
`choices[0].logprobs.token_logprobs`) — plus `POST /v1/chat/completions`, the chat equivalent: the assistant message
those same ids parse to. The chat route is the baseline: an agent calling it directly pays one HTTP hop and one
JSON round trip, and nothing else of ours.

Both routes decode the request body (as a real server must) and answer freshly encoded JSON.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

import orjson
from aiohttp import web

MODEL = "policy"
MAX_MODEL_LEN = 1_000_000  # the stand-in never refuses a prompt: context limits are not what is measured


@dataclass(frozen=True)
class CannedTurn:
    """What the stand-in "samples" on every call: ids + logprobs, and the assistant message they parse to."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    message: dict  # OpenAI assistant message: content, tool_calls (arguments as a JSON string), reasoning_content


def canned_tool_call_turn(tokenizer, tools: list[dict]) -> CannedTurn:
    """A realistic sampled turn (think block + compact tool-call JSON + turn end), parsed the way the worker does."""
    from rollout_worker.serving.parsing import parse_completion

    text = ('<think>\nThe failing assertion compares the parsed header; I should look at how it is built.\n</think>'
            '\n\n<tool_call>\n{"name":"bash","arguments":{"command":"grep -n \\"def parse_header\\" -r src/ | '
            'head -20"}}\n</tool_call><|im_end|>')
    ids = tokenizer.encode(text, add_special_tokens=False)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Fix the bug."}], tools=tools,
                                           add_generation_prompt=True, tokenize=True, return_dict=False)
    parsed = parse_completion(tokenizer, ids, prompt, tools)
    if not parsed.ok or not parsed.message.get("tool_calls"):
        raise RuntimeError(f"the canned turn does not parse as a tool call: {parsed}")
    logprobs = [round(-0.05 - 0.01 * (i % 7), 4) for i in range(len(ids))]
    return CannedTurn(text=text, token_ids=ids, logprobs=logprobs, message=parsed.message)


class StandinEngine:
    """The aiohttp application and its request counters."""

    def __init__(self, turn: CannedTurn, model: str = MODEL, max_model_len: int = MAX_MODEL_LEN):
        self.turn = turn
        self.model = model
        self.max_model_len = max_model_len
        self.counts = {"completions": 0, "chat": 0}
        n = len(turn.token_ids)
        # vLLM's /v1/completions choice with `logprobs: 0` and `return_token_ids: true`.
        self._choice = {
            "index": 0,
            "text": turn.text,
            "token_ids": turn.token_ids,
            "logprobs": {"text_offset": list(range(n)), "token_logprobs": turn.logprobs,
                         "tokens": [f"token_id:{t}" for t in turn.token_ids], "top_logprobs": [None] * n},
            "finish_reason": "stop",
            "stop_reason": None,
            "prompt_token_ids": None,
        }

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        card = {"id": self.model, "object": "model", "created": 0, "owned_by": "bench",
                "max_model_len": self.max_model_len}
        return web.json_response({"object": "list", "data": [card]})

    async def _completions(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        prompt = body.get("prompt")
        if not isinstance(prompt, list) or not prompt:
            return web.json_response({"error": {"message": "prompt must be token ids", "code": 400}}, status=400)
        self.counts["completions"] += 1
        n_out = len(self.turn.token_ids)
        answer = {"id": "cmpl-" + secrets.token_hex(8), "object": "text_completion", "created": int(time.time()),
                  "model": self.model, "choices": [self._choice],
                  "usage": {"prompt_tokens": len(prompt), "completion_tokens": n_out,
                            "total_tokens": len(prompt) + n_out}}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def _chat(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        if not isinstance(body.get("messages"), list):
            return web.json_response({"error": {"message": "messages is required", "code": 400}}, status=400)
        self.counts["chat"] += 1
        message = dict(self.turn.message)
        message["tool_calls"] = [{**call, "id": "call_" + secrets.token_hex(12)} for call in message["tool_calls"]]
        n_out = len(self.turn.token_ids)
        answer = {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion",
                  "created": int(time.time()), "model": self.model,
                  "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls", "logprobs": None}],
                  "usage": {"prompt_tokens": 0, "completion_tokens": n_out, "total_tokens": n_out}}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")


async def start_standin(turn: CannedTurn, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str,
                                                                                             StandinEngine]:
    """Start the stand-in on loopback; returns its runner (call `cleanup()`), base URL and engine (counters)."""
    engine = StandinEngine(turn)
    runner = web.AppRunner(engine.app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, f"http://{bound_host}:{bound_port}", engine


def run_standin_process(conn, turn: CannedTurn) -> None:
    """`Child` target: serve the stand-in until told to stop; answers "snapshot" with CPU and request counts."""
    from bench.processes import process_snapshot, serve_commands

    async def main() -> None:
        runner, url, engine = await start_standin(turn)
        try:
            conn.send(("ready", {"url": url}))

            async def snapshot() -> dict:
                return {**process_snapshot(), **engine.counts}

            await serve_commands(conn, {"snapshot": snapshot})
        finally:
            await runner.cleanup()

    asyncio.run(main())
