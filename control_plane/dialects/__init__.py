"""The wire formats the gate speaks, each translated onto the one internal conversation the worker handles.

    POST /rollout/{id}/v1/chat/completions   OpenAI chat completions   (chat.py: the internal form itself)
    POST /rollout/{id}/v1/messages           Anthropic Messages         (anthropic.py, anthropic_request.py)
    POST /rollout/{id}/v1/responses          OpenAI Responses           (openai_responses.py, responses_request.py)
    POST /rollout/{id}/v1beta/models/{model}:generateContent | :streamGenerateContent | :countTokens
                                             Gemini API                 (gemini.py, gemini_request.py)
"""

from __future__ import annotations

import re

from .anthropic import AnthropicMessages
from .base import Answer, Dialect, DialectName, Frame, ParsedCall
from .chat import ChatCompletions
from .gemini import GeminiGenerateContent
from .openai_responses import OpenAIResponses

CHAT_COMPLETIONS = ChatCompletions()
ANTHROPIC_MESSAGES = AnthropicMessages()
OPENAI_RESPONSES = OpenAIResponses()
GEMINI_GENERATE_CONTENT = GeminiGenerateContent()

# Which dialect answers errors on a path, routed or not (a 404 under …/v1/messages/… is still an Anthropic client).
_ANTHROPIC_PATH = re.compile(r"^/rollout/[^/]+/v1/messages(?:/|$)")
# Gemini: any path under a v1beta / v1alpha root, or a `models/…:method` call under v1.
_GEMINI_PATH = re.compile(r"^/rollout/[^/]+/(?:v1beta|v1alpha)(?:/|$)|^/rollout/[^/]+/v1/models/.+:")


def dialect_for_path(path: str) -> Dialect:
    """The dialect whose error shape a request on `path` gets; the two OpenAI dialects share theirs."""
    if _ANTHROPIC_PATH.match(path):
        return ANTHROPIC_MESSAGES
    if _GEMINI_PATH.match(path):
        return GEMINI_GENERATE_CONTENT
    return CHAT_COMPLETIONS


__all__ = [
    "ANTHROPIC_MESSAGES",
    "CHAT_COMPLETIONS",
    "GEMINI_GENERATE_CONTENT",
    "OPENAI_RESPONSES",
    "Answer",
    "Dialect",
    "DialectName",
    "Frame",
    "ParsedCall",
    "dialect_for_path",
]
