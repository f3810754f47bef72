"""What a gate dialect is: one agent wire format translated to and from the gate's internal conversation.

Whatever the agent speaks, the worker receives the same thing: OpenAI chat `messages` (+ `tools`), checked by
`validation.py`, in an unchanged `InterceptedRequest`. Token exactness (held ids + rendered suffix, design §3) is
decided on that internal conversation only, so a dialect can never weaken it — as long as it maps the agent's echo of
our previous reply back onto the same internal assistant message (content, reasoning, tool calls with their ids and
arguments). A dialect therefore does four things, and nothing else:

    parse(body, rollout)            request JSON -> ParsedCall (the internal conversation + what the reply must echo)
    reply_body(answer)              the worker's reply -> one JSON response body
    stream_body(answer, chunk)      the worker's reply -> every SSE event of a streamed response, as one buffer
    error_body(error) / stream_error(error, frame)   a GateError in the dialect's own error shape
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ..errors import GateError
from ..responses import KEEPALIVE, sse_error
from ..validation import ValidatedChat, bad_request, type_name


class DialectName(enum.StrEnum):
    """The wire formats the gate serves (also `InterceptedRequest.dialect`, for logs and trajectories)."""

    CHAT_COMPLETIONS = "chat_completions"
    ANTHROPIC_MESSAGES = "anthropic_messages"
    OPENAI_RESPONSES = "openai_responses"
    GEMINI_GENERATE_CONTENT = "gemini_generate_content"


@dataclass
class ParsedCall:
    """A request in the internal form, plus the dialect's own context for shaping the reply.

    `context` holds what the reply must echo or record (the Responses dialect: its `instructions`, `tools`, the
    `previous_response_id` chain); the worker never sees it.
    """

    chat: ValidatedChat
    context: Any = None


@dataclass(frozen=True)
class Frame:
    """What every response of one call carries, whether it ends in a reply or in an error inside its stream."""

    id: str
    created: int
    model: str
    call: ParsedCall


@dataclass(frozen=True)
class Answer(Frame):
    """The worker's reply, normalized by `responses.normalize_reply` (internal OpenAI-chat form), ready to render."""

    message: dict
    finish_reason: str
    usage: dict  # prompt_tokens, completion_tokens, total_tokens


def sse_event(name: str, payload: dict) -> bytes:
    """One named SSE event (`event:` + `data:`), the framing both Anthropic and the Responses API use."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class Dialect:
    """Base class: the OpenAI error shape and keep-alive comments, shared by the two OpenAI dialects."""

    name: DialectName
    id_prefix: str
    keepalive: bytes = KEEPALIVE  # written while a streamed reply is pending (an SSE comment: every client skips it)

    def new_id(self, hex_id: str) -> str:
        """The id the reply carries: the dialect's prefix (`chatcmpl-`, `msg_`, `resp_`) + fresh random hex."""
        return self.id_prefix + hex_id

    def parse(self, body: Any, rollout: Any) -> ParsedCall:
        raise NotImplementedError

    def parse_route(self, body: Any, rollout: Any, route: Any) -> ParsedCall:
        """`parse`, for a dialect that also reads the request's path (`route`: its match info; Gemini names the model
        and the method there)."""
        return self.parse(body, rollout)

    def reply_body(self, answer: Answer) -> bytes:
        raise NotImplementedError

    def stream_body(self, answer: Answer, chunk_chars: int) -> bytes:
        raise NotImplementedError

    def remember(self, rollout: Any, answer: Answer) -> None:
        """Called once a reply is about to be sent; a dialect that keeps per-rollout state records it here."""

    def error_body(self, error: GateError) -> dict:
        return error.body()

    def stream_error(self, error: GateError, frame: Frame) -> bytes:
        """An error after the stream's headers went out (only keep-alives were sent before it)."""
        return sse_error(error.body())

    def error_response(self, error: GateError, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(status=error.status, body=orjson.dumps(self.error_body(error)),
                            content_type="application/json", headers=headers)


def text_content(texts: list[str], empty: Any = "") -> Any:
    """Texts as internal message content: one text as a plain string, several as OpenAI text parts (the worker joins
    them exactly as it joins a chat client's parts), none as `empty`."""
    if not texts:
        return empty
    if len(texts) == 1:
        return texts[0]
    return [{"type": "text", "text": text} for text in texts]


def tool_declarations(tools: Any) -> list[tuple[str, dict]] | None:
    """A request's `tools` as (where, declaration) pairs, each checked to be an object; None when absent."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise bad_request(f"'tools' must be an array, got {type_name(tools)}")
    pairs = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise bad_request(f"tools[{i}] must be an object")
        pairs.append((f"tools[{i}]", tool))
    return pairs


def chat_function_tool(where: str, name: Any, description: Any, schema: Any, schema_field: str) -> dict:
    """A chat-completions function tool from a dialect's declaration (name, description, JSON schema), each part
    checked; `schema_field` is what the dialect calls the schema, for the error message."""
    if not isinstance(name, str) or not name:
        raise bad_request(f"{where}.name must be a non-empty string")
    function: dict[str, Any] = {"name": name}
    if description is not None:
        if not isinstance(description, str):
            raise bad_request(f"{where}.description must be a string")
        function["description"] = description
    if schema is not None:
        if not isinstance(schema, dict):
            raise bad_request(f"{where}.{schema_field} must be an object (a JSON schema)")
        function["parameters"] = schema
    return {"type": "function", "function": function}
