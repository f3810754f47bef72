"""Anthropic Messages (`POST …/v1/messages`): the dialect Claude Code speaks. Request translation lives in
`anthropic_request.py`; this module renders the worker's reply and the gate's errors the way Anthropic does.

The reply's content blocks come in a fixed order — `thinking` (the parsed `reasoning_content`), `text`, then one
`tool_use` per tool call (id = the worker's tool-call id, `input` = the parsed arguments) — so that the agent's echo
of it translates back onto the very assistant message the worker holds (no fork). Errors, the gate's own included
(401 bad key, 404 unknown rollout, 405, 413, 429, 5xx), are `{"type": "error", "error": {"type", "message"}}`.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Any

import orjson

from ..errors import GateError
from ..responses import pieces
from .anthropic_request import parse_messages_body
from .base import Answer, Dialect, DialectName, Frame, ParsedCall, sse_event


class StopReason(enum.StrEnum):
    END_TURN = "end_turn"
    TOOL_USE = "tool_use"
    MAX_TOKENS = "max_tokens"
    REFUSAL = "refusal"


_STOP_BY_FINISH = {"stop": StopReason.END_TURN, "tool_calls": StopReason.TOOL_USE, "length": StopReason.MAX_TOKENS,
                   "content_filter": StopReason.REFUSAL}

# Anthropic's error types by HTTP status (docs.claude.com/en/api/errors); other 4xx are invalid_request_error.
_ERROR_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",  # no worker took the call in time: the policy side is overloaded, retry later
    504: "timeout_error",
    529: "overloaded_error",
}

# While a streamed reply is pending: Anthropic's own keep-alive event, which every Anthropic client skips.
PING = sse_event("ping", {"type": "ping"})


def error_type(status: int) -> str:
    return _ERROR_TYPE_BY_STATUS.get(status, "invalid_request_error" if status < 500 else "api_error")


def _signature(thinking: str) -> str:
    """A stand-in for Anthropic's thinking signature: clients keep and echo it, nobody here verifies it."""
    return "irl-" + hashlib.sha256(thinking.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _input_json(arguments: str) -> tuple[str, dict]:
    """The tool_use input, as the JSON text to stream and as the object to return.

    The worker's arguments are a JSON object encoded once (`normalize_reply`); they stream verbatim. Arguments that
    are not a JSON object (a model's malformed call the parser kept as text) cannot be a tool_use `input`; they become
    `{}`, and the agent's echo then differs from the held turn, which the worker counts as a fork.
    """
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return arguments, value
    return "{}", {}


def _content_blocks(message: dict) -> list[tuple[dict, str]]:
    """The reply's blocks, each with the text its stream deltas carry (for tool_use: the input as JSON text)."""
    blocks: list[tuple[dict, str]] = []
    reasoning = message.get("reasoning_content")
    if reasoning:
        blocks.append(({"type": "thinking", "thinking": reasoning, "signature": _signature(reasoning)}, reasoning))
    if message.get("content"):
        blocks.append(({"type": "text", "text": message["content"]}, message["content"]))
    for call in message.get("tool_calls") or ():
        text, value = _input_json(call["function"]["arguments"])
        blocks.append(({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": value}, text))
    if not blocks:  # an empty reply is still a turn: with no block, an agent's echo would drop it (a fork)
        blocks.append(({"type": "text", "text": ""}, ""))
    return blocks


def _usage(usage: dict) -> dict:
    return {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"],
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def _message(frame: Frame, content: list[dict], stop_reason: StopReason | None, usage: dict) -> dict:
    return {"id": frame.id, "type": "message", "role": "assistant", "model": frame.model, "content": content,
            "stop_reason": stop_reason.value if stop_reason else None, "stop_sequence": None, "usage": usage}


class AnthropicMessages(Dialect):
    name = DialectName.ANTHROPIC_MESSAGES
    id_prefix = "msg_"
    keepalive = PING

    def parse(self, body: Any, rollout: Any) -> ParsedCall:
        return ParsedCall(parse_messages_body(body))

    def reply_body(self, answer: Answer) -> bytes:
        stop = _STOP_BY_FINISH[answer.finish_reason]
        blocks = [block for block, _ in _content_blocks(answer.message)]
        return orjson.dumps(_message(answer, blocks, stop, _usage(answer.usage)))

    def stream_body(self, answer: Answer, chunk_chars: int) -> bytes:
        """message_start, ping, each block (start, deltas, stop), message_delta (stop_reason, usage), message_stop."""
        usage = _usage(answer.usage)
        start_usage = {**usage, "output_tokens": 0}
        events = [sse_event("message_start", {"type": "message_start",
                                              "message": _message(answer, [], None, start_usage)}), PING]

        def delta(index: int, body: dict) -> None:
            events.append(sse_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                            "delta": body}))

        # Each delta type carries its text under its own key; a thinking block ends with its signature.
        delta_of = {"thinking": ("thinking_delta", "thinking"), "text": ("text_delta", "text"),
                    "tool_use": ("input_json_delta", "partial_json")}
        for index, (block, text) in enumerate(_content_blocks(answer.message)):
            kind = block["type"]
            opening = {**block, kind: ""} if kind != "tool_use" else {**block, "input": {}}
            if kind == "thinking":
                opening["signature"] = ""
            events.append(sse_event("content_block_start", {"type": "content_block_start", "index": index,
                                                            "content_block": opening}))
            delta_type, key = delta_of[kind]
            for piece in pieces(text, chunk_chars):
                delta(index, {"type": delta_type, key: piece})
            if kind == "thinking":
                delta(index, {"type": "signature_delta", "signature": block["signature"]})
            events.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": index}))
        stop = _STOP_BY_FINISH[answer.finish_reason]
        events.append(sse_event("message_delta", {"type": "message_delta",
                                                  "delta": {"stop_reason": stop.value, "stop_sequence": None},
                                                  "usage": usage}))
        events.append(sse_event("message_stop", {"type": "message_stop"}))
        return b"".join(events)

    def error_body(self, error: GateError) -> dict:
        return {"type": "error", "error": {"type": error_type(error.status), "message": error.message}}

    def stream_error(self, error: GateError, frame: Frame) -> bytes:
        return sse_event("error", self.error_body(error))

