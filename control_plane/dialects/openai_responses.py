"""OpenAI Responses (`POST …/v1/responses`): the dialect Codex CLI speaks. Request translation and the per-rollout
response history live in `responses_request.py`; this module renders replies and errors.

Our reply becomes output items in a fixed order — `reasoning` (the parsed `reasoning_content`, as `reasoning_text`
content), `message` (the text, as one `output_text` part), one `function_call` per tool call (`call_id` = the
worker's tool-call id, `arguments` verbatim) — the inverse of how `responses_request.input_messages` groups items
into one assistant message, so the agent's echo maps back onto the turn the worker holds (no fork). Every reply is
recorded in the rollout's `ResponseHistory`, so a request that sends only `previous_response_id` + new items still
gets the full conversation. Errors keep OpenAI's shape (`{"error": {...}}`); in a stream, `response.failed`.
"""

from __future__ import annotations

import enum
import itertools
from typing import Any

import orjson

from ..errors import GateError
from ..responses import pieces
from .base import Answer, Dialect, DialectName, Frame, ParsedCall, sse_event
from .responses_request import ResponseHistory, parse_responses_body


class ResponseStatus(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    INCOMPLETE = "incomplete"
    FAILED = "failed"


# A reply cut short is an `incomplete` response, with the reason the Responses API uses.
_INCOMPLETE_REASON = {"length": "max_output_tokens", "content_filter": "content_filter"}


def history_of(rollout: Any) -> ResponseHistory:
    """The rollout's response history, created on first use (it lives and dies with the rollout)."""
    return rollout.dialect_state.setdefault(DialectName.OPENAI_RESPONSES, ResponseHistory())


def _output_items(answer: Answer) -> list[dict]:
    """The reply as completed output items; their ids derive from the response id (`rs_`, `msg_`, `fc_`)."""
    suffix = answer.id.removeprefix(OpenAIResponses.id_prefix)
    message = answer.message
    items: list[dict] = []
    if message.get("reasoning_content"):
        items.append({"id": f"rs_{suffix}", "type": "reasoning", "status": "completed", "summary": [],
                      "content": [{"type": "reasoning_text", "text": message["reasoning_content"]}]})
    if message.get("content") or not (items or message.get("tool_calls")):  # an empty reply is still a turn
        items.append({"id": f"msg_{suffix}", "type": "message", "role": "assistant", "status": "completed",
                      "content": [{"type": "output_text", "text": message["content"] or "", "annotations": [],
                                   "logprobs": []}]})
    for i, call in enumerate(message.get("tool_calls") or ()):
        items.append({"id": f"fc_{suffix}_{i}", "type": "function_call", "status": "completed", "call_id": call["id"],
                      "name": call["function"]["name"], "arguments": call["function"]["arguments"]})
    return items


def _usage(usage: dict) -> dict:
    return {"input_tokens": usage["prompt_tokens"], "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": usage["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},  # the worker does not count reasoning separately
            "total_tokens": usage["total_tokens"]}


def _response(frame: Frame, status: ResponseStatus, output: list[dict], usage: dict | None = None,
              error: dict | None = None, incomplete: str | None = None) -> dict:
    """A response object; sampling fields are null because the agent's sampling values are not used."""
    echo = frame.call.context.echo
    return {
        "id": frame.id, "object": "response", "created_at": frame.created, "status": status.value,
        "completed_at": frame.created if status is ResponseStatus.COMPLETED else None,
        "error": error, "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": echo["instructions"], "max_output_tokens": echo["max_output_tokens"], "model": frame.model,
        "output": output, "parallel_tool_calls": echo["parallel_tool_calls"],
        "previous_response_id": echo["previous_response_id"], "reasoning": {"effort": None, "summary": None},
        "store": echo["store"], "temperature": None, "top_p": None, "text": {"format": {"type": "text"}},
        "tool_choice": echo["tool_choice"], "tools": echo["tools"], "truncation": "disabled", "usage": usage,
        "metadata": echo["metadata"], "background": False,
    }


def _final(answer: Answer, output: list[dict]) -> tuple[ResponseStatus, dict]:
    incomplete = _INCOMPLETE_REASON.get(answer.finish_reason)
    status = ResponseStatus.INCOMPLETE if incomplete else ResponseStatus.COMPLETED
    return status, _response(answer, status, output, _usage(answer.usage), incomplete=incomplete)


class OpenAIResponses(Dialect):
    name = DialectName.OPENAI_RESPONSES
    id_prefix = "resp_"

    def parse(self, body: Any, rollout: Any) -> ParsedCall:
        chat, context = parse_responses_body(body, history_of(rollout))
        return ParsedCall(chat, context)

    def remember(self, rollout: Any, answer: Answer) -> None:
        context = answer.call.context
        history_of(rollout).record(answer.id, context.previous_response_id, [*context.new_messages, answer.message])

    def reply_body(self, answer: Answer) -> bytes:
        return orjson.dumps(_final(answer, _output_items(answer))[1])

    def stream_body(self, answer: Answer, chunk_chars: int) -> bytes:
        """created, in_progress, per item (added, parts and deltas, done), then completed (or incomplete)."""
        events: list[bytes] = []
        sequence = itertools.count()

        def emit(kind: str, **fields: Any) -> None:
            events.append(sse_event(kind, {"type": kind, "sequence_number": next(sequence), **fields}))

        shell = _response(answer, ResponseStatus.IN_PROGRESS, [])
        emit("response.created", response=shell)
        emit("response.in_progress", response=shell)
        items = _output_items(answer)
        for index, item in enumerate(items):
            at = {"item_id": item["id"], "output_index": index}
            if item["type"] == "function_call":
                emit("response.output_item.added", output_index=index,
                     item={**item, "status": "in_progress", "arguments": ""})
                for piece in pieces(item["arguments"], chunk_chars):
                    emit("response.function_call_arguments.delta", **at, delta=piece)
                emit("response.function_call_arguments.done", **at, name=item["name"], arguments=item["arguments"])
            else:  # message (output_text) or reasoning (reasoning_text): one content part of text
                emit("response.output_item.added", output_index=index,
                     item={**item, "status": "in_progress", "content": []})
                part = item["content"][0]
                kind = part["type"]
                extra = {"logprobs": []} if kind == "output_text" else {}
                emit("response.content_part.added", **at, content_index=0, part={**part, "text": ""})
                for piece in pieces(part["text"], chunk_chars):
                    emit(f"response.{kind}.delta", **at, content_index=0, delta=piece, **extra)
                emit(f"response.{kind}.done", **at, content_index=0, text=part["text"], **extra)
                emit("response.content_part.done", **at, content_index=0, part=part)
            emit("response.output_item.done", output_index=index, item=item)
        status, final = _final(answer, items)
        emit("response.incomplete" if status is ResponseStatus.INCOMPLETE else "response.completed", response=final)
        return b"".join(events)

    def stream_error(self, error: GateError, frame: Frame) -> bytes:
        """`response.created` (the stream so far held only keep-alives), then `response.failed` with the error."""
        failed = _response(frame, ResponseStatus.FAILED, [],
                           error={"code": error.code or error.type, "message": error.message})
        return (sse_event("response.created", {"type": "response.created", "sequence_number": 0,
                                               "response": _response(frame, ResponseStatus.IN_PROGRESS, [])})
                + sse_event("response.failed", {"type": "response.failed", "sequence_number": 1, "response": failed}))
