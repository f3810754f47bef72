"""Gemini API (`POST …/v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`, `:countTokens`): the
dialect Gemini CLI and the Google Gen AI SDKs speak. Request translation lives in `gemini_request.py`; this module
renders replies and errors the way Google does.

The reply is one candidate whose content parts come in a fixed order — a `thought: true` text part (the parsed
`reasoning_content`), a text part, then one `functionCall` per tool call (`id` = the worker's tool-call id, `args` =
the parsed arguments) — so that the agent's echo maps back onto the very assistant message the worker holds. A
stream is `data: <GenerateContentResponse>` events: text and thought pieces, then the function calls with the
`finishReason` and `usageMetadata` in the last event (a function call is never split, as Google never splits one).
Finish reasons: STOP (also after function calls: Gemini has no tool-call finish reason), MAX_TOKENS, SAFETY.

Errors, the gate's own included, are Google's `{"error": {"code", "message", "status"}}`. Keep-alives are blank lines:
an SSE comment (`: keep-alive`) would stall the JS SDK (its parser matches `^\\s*data: ` at the buffer's start) and
break the Python SDK (it parses every non-`data:` line as raw JSON). An error after the stream started is written as
raw JSON on its own line, which both SDKs raise as an API error.
"""

from __future__ import annotations

import enum
from typing import Any

import orjson

from ..errors import GateError
from ..responses import pieces
from .base import Answer, Dialect, DialectName, Frame, ParsedCall
from .gemini_request import parse_count_tokens_body, parse_generate_body


class FinishReason(enum.StrEnum):
    STOP = "STOP"
    MAX_TOKENS = "MAX_TOKENS"
    SAFETY = "SAFETY"


_FINISH = {"stop": FinishReason.STOP, "tool_calls": FinishReason.STOP, "length": FinishReason.MAX_TOKENS,
           "content_filter": FinishReason.SAFETY}

# Google's canonical status names by HTTP status (cloud.google.com/apis/design/errors).
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           405: "INVALID_ARGUMENT", 408: "DEADLINE_EXCEEDED", 409: "ABORTED", 413: "INVALID_ARGUMENT",
           429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
           504: "DEADLINE_EXCEEDED"}

GENERATE = "generateContent"
STREAM_GENERATE = "streamGenerateContent"
COUNT_TOKENS = "countTokens"
METHODS = (GENERATE, STREAM_GENERATE, COUNT_TOKENS)


def error_status(status: int) -> str:
    return _STATUS.get(status, "INVALID_ARGUMENT" if status < 500 else "INTERNAL")


def split_model_call(model_call: str) -> tuple[str, str]:
    """`{model}:{method}` of the path → (model, method); the model keeps any `models/` the client put before it."""
    model, _, method = model_call.rpartition(":")
    return model.removeprefix("models/"), method


def _args(arguments: str) -> dict:
    """The functionCall `args`: the worker's arguments are a JSON object encoded once; a malformed call the parser
    kept as text cannot be `args` and becomes `{}` (the echo then differs from the held turn: the worker forks)."""
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _call_parts(message: dict) -> list[dict]:
    return [{"functionCall": {"id": call["id"], "name": call["function"]["name"],
                              "args": _args(call["function"]["arguments"])}}
            for call in message.get("tool_calls") or ()]


def _usage(usage: dict) -> dict:
    return {"promptTokenCount": usage["prompt_tokens"], "candidatesTokenCount": usage["completion_tokens"],
            "totalTokenCount": usage["total_tokens"]}


def _response(frame: Frame, parts: list[dict], finish: FinishReason | None = None,
              usage: dict | None = None) -> dict:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish.value
    body: dict[str, Any] = {"candidates": [candidate], "modelVersion": frame.model, "responseId": frame.id}
    if usage is not None:
        body["usageMetadata"] = usage
    return body


def _data(payload: dict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


class GeminiGenerateContent(Dialect):
    name = DialectName.GEMINI_GENERATE_CONTENT
    id_prefix = "gen-"
    keepalive = b"\r\n"  # a blank line: see the module docstring

    def parse_route(self, body: Any, rollout: Any, route: Any) -> ParsedCall:
        model, method = split_model_call(route["model_call"])
        return ParsedCall(parse_generate_body(body, model, method == STREAM_GENERATE))

    def count_tokens_chat(self, body: Any, model_call: str):
        return parse_count_tokens_body(body, split_model_call(model_call)[0])

    def reply_body(self, answer: Answer) -> bytes:
        message = answer.message
        parts: list[dict] = []
        if message.get("reasoning_content"):
            parts.append({"text": message["reasoning_content"], "thought": True})
        if message.get("content") or not message.get("tool_calls"):  # an empty reply is still a turn
            parts.append({"text": message.get("content") or ""})
        parts.extend(_call_parts(message))
        return orjson.dumps(_response(answer, parts, _FINISH[answer.finish_reason], _usage(answer.usage)))

    def stream_body(self, answer: Answer, chunk_chars: int) -> bytes:
        """Thought pieces, text pieces, then one last event with the function calls, finish reason and usage."""
        message = answer.message
        events = [_data(_response(answer, [{"text": piece, "thought": True}]))
                  for piece in pieces(message.get("reasoning_content") or "", chunk_chars)]
        events += [_data(_response(answer, [{"text": piece}]))
                   for piece in pieces(message.get("content") or "", chunk_chars)]
        last = _call_parts(message)
        if not events and not last:  # an empty reply is still a turn
            last = [{"text": ""}]
        events.append(_data(_response(answer, last, _FINISH[answer.finish_reason], _usage(answer.usage))))
        return b"".join(events)

    def error_body(self, error: GateError) -> dict:
        return {"error": {"code": error.status, "message": error.message, "status": error_status(error.status)}}

    def stream_error(self, error: GateError, frame: Frame) -> bytes:
        return orjson.dumps(self.error_body(error)) + b"\n"
