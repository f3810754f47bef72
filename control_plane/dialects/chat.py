"""OpenAI chat completions (`POST …/v1/chat/completions`): the internal form itself, so nothing to translate."""

from __future__ import annotations

from typing import Any

from ..responses import completion_body, stream_body
from ..validation import validate_chat_body
from .base import Answer, Dialect, DialectName, ParsedCall


class ChatCompletions(Dialect):
    name = DialectName.CHAT_COMPLETIONS
    id_prefix = "chatcmpl-"

    def parse(self, body: Any, rollout: Any) -> ParsedCall:
        return ParsedCall(validate_chat_body(body))

    def reply_body(self, answer: Answer) -> bytes:
        return completion_body(answer.id, answer.created, answer.model, answer.message, answer.finish_reason,
                               answer.usage)

    def stream_body(self, answer: Answer, chunk_chars: int) -> bytes:
        return stream_body(answer.id, answer.created, answer.model, answer.message, answer.finish_reason,
                           answer.usage, answer.call.chat.include_usage, chunk_chars)
