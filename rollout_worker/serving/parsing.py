"""Sampled token ids → the OpenAI assistant message the agent receives.

Parsing is TRL's `parse_response` with the tokenizer's response template (`add_response_schema`). Two traps from
design §3 are handled here: without `prefix=` (the prompt) and `tools=` it silently returns tool calls as plain
content, and on malformed output it silently falls back to text; we detect that fallback and report it (`ok=False`)
so the worker can count it, while the agent still gets the text.
"""

from __future__ import annotations

import copy
import json
import secrets
import weakref
from dataclasses import dataclass

from intercept_common.trl_api import add_response_schema, parse_response

# The parser keeps only what follows the last assistant header of the prefix; a short tail of the prompt holds it,
# and decoding a 160k-token prompt on every turn would cost more than the whole assembly.
PREFIX_TAIL_TOKENS = 256

_parsing_tokenizers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@dataclass
class ParsedReply:
    """The assistant message for the agent; `ok` is False when the output could not be parsed as intended."""

    message: dict
    ok: bool
    error: str | None = None


def parsing_tokenizer(tokenizer):
    """`tokenizer` itself when it has a response template, else a shallow copy given TRL's (cached per tokenizer).

    The copy leaves the caller's tokenizer untouched (the shared one from `load_qwen3_tokenizer` is read-only).
    Raises `ValueError` naming the problem when TRL knows no response template for the tokenizer's chat template.
    """
    if getattr(tokenizer, "response_template", None) is not None:
        return tokenizer
    cached = _parsing_tokenizers.get(tokenizer)
    if cached is None:
        cached = copy.copy(tokenizer)
        try:
            add_response_schema(cached)
        except ValueError as error:
            raise ValueError(
                "Cannot parse completions: TRL has no response template for this tokenizer's chat template. Keep "
                "the model's original (non-training) template on the tokenizer, or set `tokenizer.response_template`."
                f" (TRL: {error})"
            ) from error
        _parsing_tokenizers[tokenizer] = cached
    return cached


def _tool_call_marker(response_template) -> str | None:
    """The text that opens a tool call in this response template (`<tool_call>` for Qwen3), if it names one."""
    fields = response_template.get("fields") if isinstance(response_template, dict) else None
    tool_calls = fields.get("tool_calls") if isinstance(fields, dict) else None
    marker = tool_calls.get("open") if isinstance(tool_calls, dict) else None
    return marker if isinstance(marker, str) and marker else None


def new_tool_call_id() -> str:
    """An OpenAI-style tool call id."""
    return "call_" + secrets.token_hex(12)


def parse_completion(
    tokenizer, completion_ids: list[int], prompt_ids: list[int], tools: list[dict] | None
) -> ParsedReply:
    """Parse the engine's sampled ids (generated after `prompt_ids`) into an OpenAI assistant message.

    The message has `content` (None when the turn is only tool calls), `tool_calls` with fresh ids and JSON-string
    arguments, and `reasoning_content` when the model produced a think block. A truncated or malformed tool call
    yields the decoded text as content and `ok=False`.
    """
    tok = parsing_tokenizer(tokenizer)
    # Trailing special tokens (the turn end, or <|endoftext|>) are not part of the reply.
    special = set(tok.all_special_ids)
    end = len(completion_ids)
    while end and completion_ids[end - 1] in special:
        end -= 1
    ids = list(completion_ids[:end])
    if not ids:  # nothing but a turn end (the parser would take an empty list for an empty batch)
        return ParsedReply({"role": "assistant", "content": ""}, ok=True)
    try:
        parsed = parse_response(tok, ids, prefix=list(prompt_ids[-PREFIX_TAIL_TOKENS:]), tools=tools or None)
    except Exception as error:  # TRL already falls back on ValueError/TypeError; anything else must not kill the turn
        text = tok.decode(ids, skip_special_tokens=True)
        return ParsedReply({"role": "assistant", "content": text}, ok=False, error=f"parser failed: {error}")

    message: dict = {"role": "assistant"}
    reasoning = parsed.get("reasoning_content")
    if isinstance(reasoning, str):
        message["reasoning_content"] = reasoning
    content = parsed.get("content") if isinstance(parsed.get("content"), str) else ""
    tool_calls = []
    for call in parsed.get("tool_calls") or ():
        function = call.get("function", call)
        arguments = function.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        function = {"name": function["name"], "arguments": arguments}
        tool_calls.append({"id": new_tool_call_id(), "type": "function", "function": function})
    if tool_calls:
        message["content"] = content or None
        message["tool_calls"] = tool_calls
    else:
        message["content"] = content

    open_marker = _tool_call_marker(tok.response_template)
    if not tool_calls and open_marker and open_marker in content:
        # TRL fell back to text: the model started a tool call it did not finish (max_tokens) or wrote bad JSON.
        return ParsedReply(message, ok=False, error="the completion holds a tool call that could not be parsed")
    return ParsedReply(message, ok=True)
