"""Build the OpenAI wire format for a reply: a `chat.completion` object or its SSE chunk stream."""

from __future__ import annotations

import secrets
from typing import Any

import orjson

FINISH_REASONS = frozenset({"stop", "tool_calls", "length", "content_filter"})
KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"


def new_completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def new_tool_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def normalize_reply(message: dict, finish_reason: str, usage: dict | None) -> tuple[dict, dict]:
    """Check the responder's assistant message and usage; return wire-ready copies.

    Tool-call ids the responder gives are kept (a missing one gets a fresh `call_…` id); `arguments` given as a dict
    (what TRL's `parse_response` yields) are JSON-encoded, strings pass through untouched. Raises `ValueError` on a
    malformed message, so a worker bug surfaces in the worker instead of as garbage on the wire.
    """
    if not isinstance(message, dict):
        raise ValueError(f"reply message must be a dict, got {type(message).__name__}")
    if message.get("role", "assistant") != "assistant":
        raise ValueError("reply message role must be 'assistant'")
    if finish_reason not in FINISH_REASONS:
        raise ValueError(f"finish_reason must be one of {sorted(FINISH_REASONS)}, got {finish_reason!r}")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise ValueError("reply content must be a string or None")
    out: dict[str, Any] = {"role": "assistant", "content": content}
    reasoning = message.get("reasoning_content")
    if reasoning is not None:
        if not isinstance(reasoning, str):
            raise ValueError("reply reasoning_content must be a string or None")
        out["reasoning_content"] = reasoning
    tool_calls = message.get("tool_calls")
    if tool_calls:
        if not isinstance(tool_calls, list):
            raise ValueError("reply tool_calls must be a list")
        wire_calls = []
        for call in tool_calls:
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
                raise ValueError(f"malformed tool call in reply: {call!r}")
            arguments = function.get("arguments", "")
            if not isinstance(arguments, str):  # parsed arguments (a dict from `parse_response`): re-encode
                try:
                    arguments = _dumps(arguments)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"tool call arguments are not JSON-serializable: {exc}") from None
            call_id = call.get("id") or new_tool_call_id()
            if not isinstance(call_id, str):
                raise ValueError("tool call id must be a string")
            wire_calls.append(
                {"id": call_id, "type": "function", "function": {"name": function["name"], "arguments": arguments}}
            )
        out["tool_calls"] = wire_calls
    wire_usage = normalize_usage(usage)
    try:  # fail here, in the worker, rather than mid-response (e.g. lone surrogates in decoded text)
        orjson.dumps(out), orjson.dumps(wire_usage)
    except TypeError as exc:  # orjson.JSONEncodeError
        raise ValueError(f"reply is not JSON-encodable: {exc}") from None
    return out, wire_usage


def normalize_usage(usage: dict | None) -> dict:
    """Usage with integer counts and a `total_tokens`; zeros when the responder gives none."""
    usage = dict(usage or {})
    for key in ("prompt_tokens", "completion_tokens"):
        value = usage.setdefault(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"usage.{key} must be a non-negative int")
    usage.setdefault("total_tokens", usage["prompt_tokens"] + usage["completion_tokens"])
    return usage


def completion_body(completion_id: str, created: int, model: str, message: dict, finish_reason: str,
                    usage: dict) -> bytes:
    """A full non-streaming `chat.completion` object, encoded."""
    return orjson.dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
            "usage": usage,
            "system_fingerprint": None,
        }
    )


def pieces(text: str, size: int) -> list[str]:
    """`text` cut into stream deltas of at most `size` characters (none for an empty text)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def stream_body(completion_id: str, created: int, model: str, message: dict, finish_reason: str, usage: dict,
                include_usage: bool, chunk_chars: int) -> bytes:
    """Every SSE event of a streamed reply, `data: [DONE]` included, as one buffer (one write on the hot path)."""

    def event(delta: dict, finish: str | None = None) -> bytes:
        chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    events = [event({"role": "assistant", "content": ""})]
    for piece in pieces(message.get("reasoning_content") or "", chunk_chars):
        events.append(event({"reasoning_content": piece}))
    for piece in pieces(message.get("content") or "", chunk_chars):
        events.append(event({"content": piece}))
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        opening = {"index": index, "id": call["id"], "type": "function",
                   "function": {"name": function["name"], "arguments": ""}}
        events.append(event({"tool_calls": [opening]}))
        for piece in pieces(function["arguments"], chunk_chars):
            events.append(event({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    events.append(event({}, finish_reason))
    if include_usage:
        usage_chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [], "usage": usage}
        events.append(b"data: " + orjson.dumps(usage_chunk) + b"\n\n")
    events.append(DONE)
    return b"".join(events)


def sse_error(body: dict) -> bytes:
    """An error inside an already-started stream: the OpenAI SDKs raise `APIError` on a `data:` event with `error`."""
    return b"data: " + orjson.dumps(body) + b"\n\n"
