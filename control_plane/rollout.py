"""The worker's side of the gate: one `RolloutHandle` per rollout, one `InterceptedRequest` per agent chat call.

Everything here runs on the server's event loop. Requests flow through an `asyncio.Queue` per rollout (no polling);
each request carries one future that the worker settles with `reply()` or `fail()` and the HTTP handler awaits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .endpoint import RolloutEndpoint
from .errors import GateError, RolloutClosed
from .responses import new_completion_id, normalize_reply

# How a request ended (`InterceptedRequest.end_reason`).
REPLIED = "replied"
FAILED = "failed"
CLIENT_DISCONNECTED = "client_disconnected"
TIMED_OUT = "timeout"
ROLLOUT_CLOSED = "rollout_closed"


def _require_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Futures are not thread-safe: settle them only from the server's loop (from another thread, hand the
    coroutine to that loop: `asyncio.run_coroutine_threadsafe`)."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not loop:
        raise RuntimeError("gate objects must be used on the server's event loop; from another thread hand the "
                           "coroutine to it with asyncio.run_coroutine_threadsafe")


class Reply:
    """The worker's answer, normalized for the wire (what `InterceptedRequest.outcome` resolves to)."""

    __slots__ = ("message", "finish_reason", "usage")

    def __init__(self, message: dict, finish_reason: str, usage: dict) -> None:
        self.message = message
        self.finish_reason = finish_reason
        self.usage = usage


class InterceptedRequest:
    """One chat call from an agent, waiting for the worker's answer.

    Whatever wire format the agent spoke (`dialect`), the call reaches the worker as an OpenAI chat completion:
    `messages` and `tools` are always in the chat-completions form, and the reply is always an OpenAI assistant
    message; the gate translates both ways (`control_plane/dialects/`).

    Attributes:
        rollout_id: the rollout the call arrived on.
        id: the id the answer will carry (`chatcmpl-…`; `msg_…` for Anthropic Messages, `resp_…` for Responses).
        dialect: the wire format the agent spoke ("chat_completions", "anthropic_messages", "openai_responses");
            informational only.
        messages: the validated `messages` list: exactly as sent for chat completions, else the translation.
        tools: the `tools` list, or None.
        stream: whether the agent asked for SSE.
        include_usage: whether the agent asked for a usage chunk (`stream_options.include_usage`).
        params: the sampling keys the agent sent (temperature, top_p, max_tokens, stop, seed, …), nulls dropped.
        model: the `model` string the agent sent, if any.
        raw: the whole request body, as the agent sent it (in its own dialect).
        received_at: `time.monotonic()` when the body was accepted.
        disconnected: set when the request can no longer be answered before a reply was given — the client went away,
            the request timed out, or the rollout closed (`end_reason` says which). Watch it to cancel generation.
        end_reason: None while open; then one of "replied", "failed", "client_disconnected", "timeout",
            "rollout_closed".
    """

    def __init__(self, rollout_id: str, body: dict, *, messages: list[dict], tools: list[dict] | None, stream: bool,
                 include_usage: bool, params: dict[str, Any], model: str | None, request_id: str | None = None,
                 dialect: str = "chat_completions") -> None:
        self.rollout_id = rollout_id
        self.id = request_id or new_completion_id()
        self.dialect = dialect
        self.raw = body
        self.messages = messages
        self.tools = tools
        self.stream = stream
        self.include_usage = include_usage
        self.params = params
        self.model = model
        self.received_at = time.monotonic()
        self.disconnected = asyncio.Event()
        self.end_reason: str | None = None
        self.taken = False  # handed to a worker by `next_request`
        self._outcome: asyncio.Future[Reply | GateError] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"InterceptedRequest(rollout_id={self.rollout_id!r}, id={self.id!r}, stream={self.stream})"

    @property
    def done(self) -> bool:
        """True once the request was answered, failed, or abandoned."""
        return self._outcome.done()

    async def reply(self, message: dict, finish_reason: str = "stop", usage: dict | None = None) -> bool:
        """Answer with an assistant message (`content`, optional `tool_calls`, optional `reasoning_content`).

        Returns False (and does nothing) when the request already ended: client gone, timed out, rollout closed, or
        answered before. Raises `ValueError` on a malformed message. Must run on the server's event loop.
        """
        _require_loop(self._outcome.get_loop())
        if self._outcome.done():
            return False
        wire_message, wire_usage = normalize_reply(message, finish_reason, usage)
        self.settle(Reply(wire_message, finish_reason, wire_usage), REPLIED)
        return True

    async def fail(self, status: int, message: str, code: str | None = None, type: str | None = None) -> bool:
        """Answer with an error in the agent's dialect: JSON with `status`, or an error event if the stream started.

        Returns False (and does nothing) when the request already ended.
        """
        _require_loop(self._outcome.get_loop())
        if self._outcome.done():
            return False
        self.settle(GateError(status, message, code=code, type=type), FAILED)
        return True

    @property
    def outcome(self) -> asyncio.Future[Reply | GateError]:
        """The future the gate's HTTP handler waits on: the worker's `Reply`, or the `GateError` to answer with."""
        return self._outcome

    def settle(self, outcome: Reply | GateError | None, reason: str) -> None:
        """End the request once (the gate's handler: client gone, timed out; the rollout: closed). Every end other
        than a worker's reply/fail also sets `disconnected`. Later calls do nothing."""
        if self._outcome.done():
            return
        self.end_reason = reason
        if outcome is None:  # the client is gone; nothing will be written
            outcome = GateError(499, "client disconnected", code="client_disconnected")
        self._outcome.set_result(outcome)
        if reason not in (REPLIED, FAILED):
            self.disconnected.set()


_CLOSED = object()  # queue sentinel: wakes every `next_request` waiter once the rollout closes


class RolloutHandle:
    """One rollout's URL, key and request queue.

    `base_url` ends in `/v1` (give it to the agent as its OpenAI base URL) and `api_key` opens this rollout only.
    """

    def __init__(self, rollout_id: str, base_url: str, api_key: str, model: str,
                 on_close: Callable[[RolloutHandle], None], *, report_truncation: bool = True) -> None:
        self._on_close = on_close  # the server forgets the rollout: its URL answers 404 from then on
        # Whether a reply cut by the token limit is reported as cut to this rollout's agent (`GateConfig`'s help).
        self.report_truncation = report_truncation
        self.rollout_id = rollout_id
        self.base_url = base_url
        self.api_key = api_key
        self.model = model
        self.opened_at = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._pending: set[InterceptedRequest] = set()
        self._closed = False
        self._tokens = 0.0  # the rate limit's bucket (see `take_request_token`), filled on first use
        self._tokens_at: float | None = None
        # Per-rollout state a dialect keeps between calls (the Responses dialect: its response history, for
        # `previous_response_id`); dropped when the rollout closes.
        self.dialect_state: dict[str, Any] = {}

    def __repr__(self) -> str:  # never show the key
        return f"RolloutHandle(rollout_id={self.rollout_id!r}, base_url={self.base_url!r}, closed={self._closed})"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def root_url(self) -> str:
        """`base_url` without its `/v1`: the base URL for clients that append `/v1/…` themselves (the Anthropic SDK
        and Claude Code's `ANTHROPIC_BASE_URL`)."""
        return self.base_url.removesuffix("/v1")

    @property
    def pending(self) -> int:
        """Requests of this rollout that are queued or awaiting their reply."""
        return len(self._pending)

    @property
    def endpoint(self) -> RolloutEndpoint:
        """This rollout as the `RolloutEndpoint` contract episode runners receive."""
        return RolloutEndpoint(rollout_id=self.rollout_id, base_url=self.base_url, api_key=self.api_key,
                               model=self.model)

    async def next_request(self, timeout: float | None = None) -> InterceptedRequest:
        """The next chat call of this rollout, in arrival order.

        Raises `asyncio.TimeoutError` when none arrives within `timeout` seconds (None: wait until one arrives or the
        rollout closes) and `RolloutClosed` once the rollout is closed. Calls whose client already left are skipped.
        """
        _require_loop(self._loop)
        loop = self._loop
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._closed:
                raise RolloutClosed(f"rollout {self.rollout_id!r} is closed")
            if not self._queue.empty():
                item = self._queue.get_nowait()
            elif deadline is None:
                item = await self._queue.get()
            else:
                timed_out = asyncio.TimeoutError(f"no request on rollout {self.rollout_id!r} within {timeout} s")
                if deadline <= loop.time():
                    raise timed_out
                try:
                    async with asyncio.timeout_at(deadline):  # no task per call, unlike wait_for
                        item = await self._queue.get()
                except TimeoutError:
                    raise timed_out from None
            if item is _CLOSED:
                self._queue.put_nowait(_CLOSED)  # leave it for the next waiter
                raise RolloutClosed(f"rollout {self.rollout_id!r} is closed")
            if item.done:
                continue
            item.taken = True
            return item

    async def close(self, reason: str = "rollout closed") -> None:
        """Close the rollout: its URL answers 404 from now on and every pending or queued request fails at once."""
        _require_loop(self._loop)
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        self.dialect_state.clear()
        error_message = f"{reason}; this rollout accepts no more requests"
        for req in list(self._pending):
            req.settle(GateError(404, error_message, code="rollout_closed"), ROLLOUT_CLOSED)
        self._pending.clear()
        self._queue.put_nowait(_CLOSED)

    # -- used by the gate's HTTP handler ---------------------------------------------------------------------------
    def take_request_token(self, rate_per_s: float, burst: int) -> float:
        """Token-bucket rate limit of this rollout's requests: 0.0 when one may proceed, else the seconds to wait."""
        now = time.monotonic()
        if self._tokens_at is None:
            self._tokens = float(burst)
        else:
            self._tokens = min(float(burst), self._tokens + (now - self._tokens_at) * rate_per_s)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / rate_per_s

    def admit(self, req: InterceptedRequest, max_pending: int) -> None:
        """Queue a call for the worker; 404 when closed, 429 past `max_pending` calls in flight."""
        if self._closed:
            raise GateError(404, f"rollout {self.rollout_id!r} is closed", code="rollout_closed")
        if len(self._pending) >= max_pending:
            raise GateError(429, f"too many concurrent requests on this rollout (limit {max_pending})",
                            code="too_many_pending_requests")
        self._pending.add(req)
        self._queue.put_nowait(req)

    def release(self, req: InterceptedRequest) -> None:
        """The call's HTTP exchange is over (answered or abandoned)."""
        self._pending.discard(req)
