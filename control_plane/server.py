"""The interception gate: an aiohttp server standing where an agent expects an OpenAI-compatible endpoint.

Routes (errors are JSON in the route's dialect — Anthropic's shape under …/v1/messages, Google's under the Gemini
routes, OpenAI's elsewhere —
aiohttp's own 404/405/413 included):
    POST /rollout/{rollout_id}/v1/chat/completions   chat call, JSON or SSE, answered by the worker
    POST /rollout/{rollout_id}/v1/messages           the same, spoken as Anthropic Messages (Claude Code)
    POST /rollout/{rollout_id}/v1/messages/count_tokens   an estimate of the prompt's tokens (Anthropic)
    POST /rollout/{rollout_id}/v1/responses          the same, spoken as OpenAI Responses (Codex)
    POST /rollout/{rollout_id}/{v1beta|v1|v1alpha}/models/{model}:generateContent | :streamGenerateContent (SSE)
                                                     the same, spoken as the Gemini API (Gemini CLI); and :countTokens
    GET  /rollout/{rollout_id}/v1/models             the served model name
    GET  /healthz                                    liveness + counts (no ids, no secrets)
    GET  /metrics                                    Prometheus text
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import math
import re
import secrets
import time
from typing import Any

from aiohttp import web

from intercept_common.http_site import start_site
from intercept_common.served_model import DEFAULT_SERVED_MODEL_NAME

from .config import GateConfig
from .dialects import (
    ANTHROPIC_MESSAGES,
    CHAT_COMPLETIONS,
    GEMINI_GENERATE_CONTENT,
    OPENAI_RESPONSES,
    Answer,
    Dialect,
    Frame,
    ParsedCall,
    dialect_for_path,
)
from .dialects.anthropic_request import estimate_input_tokens, parse_messages_body
from .dialects.gemini import COUNT_TOKENS, METHODS, split_model_call
from .errors import GateError
from .http_logging import install_malformed_http_filter
from .metrics import CLIENT_CLOSED, GateMetrics
from .rollout import CLIENT_DISCONNECTED, TIMED_OUT, InterceptedRequest, Reply, RolloutHandle
from .validation import parse_json_body

logger = logging.getLogger(__name__)


install_malformed_http_filter()

ROLLOUT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LINGER_S = 1.0
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class InterceptionServer:
    """OpenAI-compatible chat endpoint per rollout; each call is queued for the worker to answer.

    Args:
        host, port: where to listen; port 0 picks a free port (read `url` after `start()`).
        config: limits and timings (`GateConfig`).
        served_model_name: the name `/v1/models` lists and responses carry.
        secret: the server secret rollout keys are derived from (HMAC-SHA256(secret, rollout id)); random by default.
            Never logged.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, config: GateConfig | None = None,
                 served_model_name: str = DEFAULT_SERVED_MODEL_NAME, *, secret: bytes | None = None) -> None:
        self.host = host
        self.port = port
        self.config = config or GateConfig()
        self.served_model_name = served_model_name
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        if len(self._secret) < 16:
            raise ValueError("secret must be at least 16 bytes")
        self._rollouts: dict[str, RolloutHandle] = {}
        self._used_ids: set[str] = set()  # a closed id is never reopened: its key would open the new rollout
        self._metrics = GateMetrics()
        self._pending_total = 0  # chat requests admitted and not yet released, across rollouts
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._started_at = time.monotonic()

    def __repr__(self) -> str:
        return f"InterceptionServer(url={self._url!r}, open_rollouts={len(self._rollouts)})"

    # -- lifecycle ------------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the server is not started")
        return self._url

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the server is already started")
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=[self._error_middleware])
        for path, dialect in (("chat/completions", CHAT_COMPLETIONS), ("messages", ANTHROPIC_MESSAGES),
                              ("responses", OPENAI_RESPONSES)):
            app.router.add_post(f"/rollout/{{rollout_id}}/v1/{path}", functools.partial(self._call, dialect),
                                name=dialect.name.value)
        app.router.add_post("/rollout/{rollout_id}/v1/messages/count_tokens", self._count_tokens,
                            name="anthropic_count_tokens")
        app.router.add_post(r"/rollout/{rollout_id}/{api_version:v1beta|v1|v1alpha}/models/{model_call:[^:]+:\w+}",
                            self._gemini, name=GEMINI_GENERATE_CONTENT.name.value)
        app.router.add_get("/rollout/{rollout_id}/v1/models", self._models, name="models", allow_head=False)
        app.router.add_get("/healthz", self._healthz, name="healthz", allow_head=False)
        app.router.add_get("/metrics", self._metrics_text, name="metrics", allow_head=False)
        # A client that disconnects cancels its handler (start_site's handler_cancellation): that is how the worker
        # learns of it. lingering_time: after an early answer (408/413) aiohttp drains the unread body before
        # closing; 10 s by default would let a trickling client hold the connection, 0 risks a reset that eats the
        # answer.
        self._runner, self._url = await start_site(app, host=self.host, port=self.port, lingering_time=_LINGER_S,
                                                   shutdown_timeout=self.config.shutdown_timeout_s)
        self.port = self._runner.addresses[0][1]
        self._started_at = time.monotonic()

    async def stop(self) -> None:
        """Close every rollout (failing its pending requests) and shut the site down."""
        for rollout in list(self._rollouts.values()):
            await rollout.close("server stopping")
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- rollouts -------------------------------------------------------------------------------------------------
    async def open_rollout(self, rollout_id: str, *, report_truncation: bool | None = None) -> RolloutHandle:
        """Open a rollout: its own URL (`base_url`, ends in /v1) and key (`api_key`). Ids are single-use.

        `report_truncation`: how this rollout's agent wants a reply the token limit cut (its launcher's declaration;
        None: reported). `GateConfig.report_truncation`, when set, overrides it for every rollout.
        """
        if self._url is None or self._runner is None:
            raise RuntimeError("the server is not running: start() it before opening rollouts")
        if not isinstance(rollout_id, str) or not ROLLOUT_ID_PATTERN.match(rollout_id):
            raise ValueError("rollout_id must be 1-128 characters of [A-Za-z0-9._-], starting alphanumeric")
        if rollout_id in self._used_ids:
            raise ValueError(f"rollout id {rollout_id!r} was already used; rollout ids are single-use")
        self._used_ids.add(rollout_id)
        if self.config.report_truncation is not None:
            report_truncation = self.config.report_truncation
        handle = RolloutHandle(rollout_id, f"{self._url}/rollout/{rollout_id}/v1", self._key_for(rollout_id),
                               self.served_model_name, on_close=self._forget_rollout,
                               report_truncation=report_truncation is not False)
        self._rollouts[rollout_id] = handle
        self._metrics.rollouts_opened_total += 1
        return handle

    def get_rollout(self, rollout_id: str) -> RolloutHandle | None:
        return self._rollouts.get(rollout_id)

    @property
    def open_rollouts(self) -> int:
        return len(self._rollouts)

    @property
    def pending_requests(self) -> int:
        return sum(r.pending for r in self._rollouts.values())

    @property
    def metrics(self) -> dict[str, Any]:
        """A snapshot of the counters, for tests and logs."""
        return self._metrics.snapshot(self.open_rollouts, self.pending_requests)

    def _forget_rollout(self, rollout: RolloutHandle) -> None:
        if self._rollouts.get(rollout.rollout_id) is rollout:
            del self._rollouts[rollout.rollout_id]

    def _key_for(self, rollout_id: str) -> str:
        return "irl-" + hmac.new(self._secret, rollout_id.encode(), hashlib.sha256).hexdigest()

    # -- HTTP plumbing --------------------------------------------------------------------------------------------
    @web.middleware
    async def _error_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Turn every error into JSON in the path's dialect and count every request by route and status."""
        start = time.monotonic()
        route = request.match_info.route.name or "unmatched"
        dialect = dialect_for_path(request.path)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except GateError as exc:
            status = exc.status
            return self._error_response(exc, dialect, exc.headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                status = exc.status
                raise
            status = exc.status
            message = {
                404: f"no such route: {request.method} {request.path}",
                405: f"method {request.method} is not allowed on {request.path}",
                413: f"request body too large (limit {self.config.max_body_bytes} bytes)",
            }.get(exc.status, exc.reason)
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status)
            return self._error_response(GateError(exc.status, message, code=code), dialect, headers)
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        except ConnectionError:  # the client left mid-body; nobody reads this answer
            status = CLIENT_CLOSED
            return dialect.error_response(GateError(400, "client connection lost", code="client_disconnected"))
        except Exception:
            logger.exception("gate handler failed on %s %s", request.method, route)
            return dialect.error_response(GateError(500, "internal gate error", code="internal_error"))
        finally:
            self._metrics.observe(route, status, time.monotonic() - start)

    @staticmethod
    def _error_response(error: GateError, dialect: Dialect, headers: dict[str, str] | None = None) -> web.Response:
        response = dialect.error_response(error, headers)
        if error.status in (408, 413):  # the body was not read in full: do not reuse the connection
            response.force_close()
        return response

    def _authorized_rollout(self, request: web.Request) -> RolloutHandle:
        """Authenticate before looking the rollout up, so an unauthenticated caller learns nothing about which ids
        exist: no key / wrong key → 401, then unknown or closed rollout → 404."""
        rollout_id = request.match_info["rollout_id"]
        # x-api-key (Anthropic), x-goog-api-key or ?key= (Google); an empty one must not hide a Bearer token
        key = (request.headers.get("x-api-key") or request.headers.get("x-goog-api-key")
               or request.query.get("key") or None)
        if key is None:
            auth = request.headers.get("Authorization", "")
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                key = value.strip()
        if not key:
            raise GateError(401, "missing API key: send 'Authorization: Bearer <key>', 'x-api-key' or 'x-goog-api-key'",
                            code="missing_api_key")
        expected = self._key_for(rollout_id)
        if not hmac.compare_digest(key.encode("utf-8", "surrogateescape"), expected.encode()):
            raise GateError(401, "invalid API key for this rollout", code="invalid_api_key")
        rollout = self._rollouts.get(rollout_id)
        if rollout is None:
            raise GateError(404, "rollout not found or closed", code="rollout_not_found")
        wait_s = rollout.take_request_token(self.config.rollout_requests_per_s, self.config.rollout_request_burst)
        if wait_s > 0:
            self._metrics.rate_limited_total += 1
            raise GateError(429, f"this rollout exceeds {self.config.rollout_requests_per_s:g} requests per second",
                            code="rate_limited", headers={"Retry-After": str(max(1, math.ceil(wait_s)))})
        return rollout

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "open_rollouts": self.open_rollouts,
                                  "pending_requests": self.pending_requests,
                                  "uptime_s": round(time.monotonic() - self._started_at, 3)})

    async def _metrics_text(self, request: web.Request) -> web.Response:
        return web.Response(text=self._metrics.render(self.open_rollouts, self.pending_requests),
                            content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def _models(self, request: web.Request) -> web.Response:
        self._authorized_rollout(request)
        card = {"id": self.served_model_name, "object": "model", "created": int(time.time()),
                "owned_by": "intercept-rl"}
        return web.json_response({"object": "list", "data": [card]})

    # -- chat calls, in every dialect -------------------------------------------------------------------------------
    async def _read_json(self, request: web.Request) -> Any:
        if request.content_length is not None and request.content_length > self.config.max_body_bytes:
            raise GateError(413, f"request body too large (limit {self.config.max_body_bytes} bytes)",
                            code="request_too_large")
        try:  # read() raises 413 past client_max_size (chunked bodies); a trickling body must not hold us forever
            async with asyncio.timeout(self.config.body_timeout_s):
                raw = await request.read()
        except TimeoutError:
            raise GateError(408, f"request body not received within {self.config.body_timeout_s} s",
                            code="body_timeout") from None
        return parse_json_body(raw)

    async def _call(self, dialect: Dialect, request: web.Request) -> web.StreamResponse:
        """One agent call: translate it (`dialect`), queue it for the worker, answer in the same dialect."""
        rollout = self._authorized_rollout(request)
        body = await self._read_json(request)
        call = dialect.parse_route(body, rollout, request.match_info)
        chat = call.chat
        req = InterceptedRequest(rollout.rollout_id, body, messages=chat.messages, tools=chat.tools,
                                 stream=chat.stream, include_usage=chat.include_usage, params=chat.params,
                                 model=chat.model, request_id=dialect.new_id(secrets.token_hex(12)),
                                 dialect=dialect.name.value)
        if self._pending_total >= self.config.max_pending_total:
            raise GateError(503, f"the gate holds {self._pending_total} pending requests (limit "
                            f"{self.config.max_pending_total}); retry later", code="gate_overloaded",
                            headers={"Retry-After": "1"})
        rollout.admit(req, self.config.max_pending_per_rollout)
        self._pending_total += 1
        try:
            if req.stream:
                return await self._answer_stream(request, req, dialect, call, rollout)
            outcome = await self._await_outcome(req, None)
            if isinstance(outcome, GateError):
                return dialect.error_response(outcome)
            answer = self._answer(req, call, outcome, rollout)
            dialect.remember(rollout, answer)
            return web.Response(body=dialect.reply_body(answer), content_type="application/json")
        except asyncio.CancelledError:
            self._client_left(req)
            raise
        finally:
            rollout.release(req)
            self._pending_total -= 1

    async def _count_tokens(self, request: web.Request) -> web.Response:
        """Anthropic's `count_tokens`: an estimate (see `estimate_input_tokens`), never sent to the worker."""
        self._authorized_rollout(request)
        chat = parse_messages_body(await self._read_json(request))
        return web.json_response({"input_tokens": estimate_input_tokens(chat)})

    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        """The Gemini routes: `generateContent` and `streamGenerateContent` are calls; `countTokens` an estimate."""
        method = split_model_call(request.match_info["model_call"])[1]
        if method not in METHODS:
            raise GateError(404, f"unknown method {method!r}: expected one of {', '.join(METHODS)}",
                            code="not_found")
        if method != COUNT_TOKENS:
            return await self._call(GEMINI_GENERATE_CONTENT, request)
        self._authorized_rollout(request)  # and, like Anthropic's count_tokens, an estimate never sent to the worker
        body = await self._read_json(request)
        chat = GEMINI_GENERATE_CONTENT.count_tokens_chat(body, request.match_info["model_call"])
        return web.json_response({"totalTokens": estimate_input_tokens(chat)})

    def _client_left(self, req: InterceptedRequest) -> None:
        if not req.done:
            self._metrics.disconnects_total += 1
        req.settle(None, CLIENT_DISCONNECTED)

    def _answer(self, req: InterceptedRequest, call: ParsedCall, reply: Reply, rollout: RolloutHandle) -> Answer:
        finish = reply.finish_reason
        if finish == "length" and not rollout.report_truncation:
            finish = "stop"  # see GateConfig.report_truncation: the worker already holds the cut turn as sampled
        return Answer(req.id, int(time.time()), self.served_model_name, call, reply.message, finish, reply.usage)

    async def _answer_stream(self, request: web.Request, req: InterceptedRequest, dialect: Dialect,
                             call: ParsedCall, rollout: RolloutHandle) -> web.StreamResponse:
        """SSE answer. Headers go out with the first keep-alive, so an early failure is still a plain HTTP error."""
        response = web.StreamResponse(status=200, headers=_SSE_HEADERS)

        async def keepalive() -> None:
            if not response.prepared:
                await response.prepare(request)
            await response.write(dialect.keepalive)

        try:
            outcome = await self._await_outcome(req, keepalive)
            if isinstance(outcome, GateError):
                if not response.prepared:
                    return dialect.error_response(outcome)
                frame = Frame(req.id, int(time.time()), self.served_model_name, call)
                await response.write(dialect.stream_error(outcome, frame))
            else:
                answer = self._answer(req, call, outcome, rollout)
                dialect.remember(rollout, answer)
                payload = dialect.stream_body(answer, self.config.stream_chunk_chars)
                if not response.prepared:
                    await response.prepare(request)
                await response.write(payload)
            await response.write_eof()
        except ConnectionError:  # the client left between our writes
            self._client_left(req)
        return response

    async def _await_outcome(self, req: InterceptedRequest, keepalive: Any) -> Reply | GateError:
        """Wait for the worker's answer, bounded by the queue and request timeouts, sending keep-alives if asked."""
        future = req.outcome
        config = self.config
        interval = config.keepalive_interval_s
        next_keepalive = req.received_at + interval
        while not future.done():
            now = time.monotonic()
            deadline = req.received_at + config.request_timeout_s
            queued = not req.taken
            if queued:
                deadline = min(deadline, req.received_at + config.queue_timeout_s)
            if now >= deadline:
                self._metrics.timeouts_total += 1
                if queued:
                    error = GateError(503, f"no worker took the request within {config.queue_timeout_s} s",
                                      code="queue_timeout")
                else:
                    error = GateError(504, f"no reply within {config.request_timeout_s} s", code="request_timeout")
                req.settle(error, TIMED_OUT)
                break
            wake = deadline if keepalive is None else min(deadline, next_keepalive)
            await asyncio.wait((future,), timeout=max(wake - now, 0.0))
            if keepalive is not None and not future.done() and time.monotonic() >= next_keepalive:
                await keepalive()
                next_keepalive = time.monotonic() + interval
        return future.result()
