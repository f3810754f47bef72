"""An Anthropic Messages request body → the internal conversation (OpenAI chat `messages` + `tools`).

    system: "…" | [text blocks]                → a leading {"role": "system"} message
    user text blocks                           → {"role": "user"}
    user tool_result blocks                    → one {"role": "tool", "tool_call_id": tool_use_id} each, in place
    assistant thinking / text / tool_use       → one {"role": "assistant"}: reasoning_content, content, tool_calls
    consecutive messages of one role           → merged first, as Anthropic's API itself combines them
    tools {name, description, input_schema}    → {"type": "function", "function": {name, description, parameters}}

A tool_use `input` becomes compact JSON `arguments` and its `id` the tool-call id, so the agent's echo of our reply
maps back onto the assistant message the worker holds. `is_error` on a tool_result is accepted and not rendered:
the chat template has no slot for it, and agents (Claude Code: `<tool_use_error>…`) say so in the content anyway.
`cache_control`, `citations`, `metadata`, `thinking` (the request option) and other unknown fields are ignored;
images and documents are refused (the policy is a text model), as is everything the worker could not render.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from ..validation import ValidatedChat, bad_request, check_param, type_name, validate_messages
from .base import chat_function_tool, text_content, tool_declarations

# Anthropic's tool_choice types → OpenAI chat's.
_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}
_MEDIA = frozenset({"image", "document", "search_result", "container_upload"})
_SAMPLING = (("temperature", "number"), ("top_p", "number"), ("top_k", "integer"), ("max_tokens", "integer"))
_MAX_STOP_SEQUENCES = 16


def _text_of(block: dict, where: str) -> str:
    if not isinstance(block.get("text"), str):
        raise bad_request(f"{where}.text must be a string")
    return block["text"]


def _unsupported(kind: Any, where: str, context: str) -> Exception:
    if kind in _MEDIA:
        return bad_request(f"{where}: {kind} content is not supported; this endpoint serves a text-only model",
                           "unsupported_content")
    return bad_request(f"{where}.type {kind!r} is not supported in {context}")


def _blocks(content: Any, where: str) -> list[tuple[dict, str]]:
    """Content as (block, where) pairs: a string is one text block."""
    if isinstance(content, str):
        return [({"type": "text", "text": content}, f"{where}")]
    if not isinstance(content, list):
        raise bad_request(f"{where} must be a string or an array of content blocks, got {type_name(content)}")
    out = []
    for j, block in enumerate(content):
        bwhere = f"{where}[{j}]"
        if not isinstance(block, dict):
            raise bad_request(f"{bwhere} must be an object, got {type_name(block)}")
        if not isinstance(block.get("type"), str):
            raise bad_request(f"{bwhere}.type must be a string")
        out.append((block, bwhere))
    return out


def _system_message(system: Any) -> dict | None:
    texts = []
    for block, where in _blocks(system, "system"):
        if block["type"] != "text":
            raise _unsupported(block["type"], where, "'system'")
        texts.append(_text_of(block, where))
    return {"role": "system", "content": text_content(texts)} if texts else None


def _tool_message(block: dict, where: str) -> dict:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request(f"{where}.tool_use_id must be a non-empty string")
    if "is_error" in block and block["is_error"] is not None and not isinstance(block["is_error"], bool):
        raise bad_request(f"{where}.is_error must be a boolean")
    content = block.get("content")
    texts = []
    if content is not None:
        for inner, iwhere in _blocks(content, f"{where}.content"):
            if inner["type"] != "text":
                raise _unsupported(inner["type"], iwhere, "a tool_result")
            texts.append(_text_of(inner, iwhere))
    return {"role": "tool", "tool_call_id": call_id, "content": text_content(texts)}


def _user_messages(blocks: list[tuple[dict, str]]) -> list[dict]:
    """Tool results become tool messages where they stand; the text around them becomes user messages."""
    out: list[dict] = []
    texts: list[str] = []
    for block, where in blocks:
        kind = block["type"]
        if kind == "text":
            texts.append(_text_of(block, where))
        elif kind == "tool_result":
            if texts:
                out.append({"role": "user", "content": text_content(texts)})
                texts = []
            out.append(_tool_message(block, where))
        else:
            raise _unsupported(kind, where, "a user message")
    if texts or not out:
        out.append({"role": "user", "content": text_content(texts)})
    return out


def _assistant_message(blocks: list[tuple[dict, str]]) -> dict:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict] = []
    for block, where in blocks:
        kind = block["type"]
        if kind == "text":
            texts.append(_text_of(block, where))
        elif kind == "thinking":
            if not isinstance(block.get("thinking"), str):
                raise bad_request(f"{where}.thinking must be a string")
            thoughts.append(block["thinking"])
        elif kind == "redacted_thinking":
            continue  # opaque to everyone but Anthropic: nothing to render
        elif kind == "tool_use":
            call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
            if not isinstance(call_id, str) or not call_id:
                raise bad_request(f"{where}.id must be a non-empty string")
            if not isinstance(name, str) or not name:
                raise bad_request(f"{where}.name must be a non-empty string")
            if not isinstance(arguments, dict):
                raise bad_request(f"{where}.input must be an object, got {type_name(arguments)}")
            calls.append({"id": call_id, "type": "function",
                          "function": {"name": name, "arguments": orjson.dumps(arguments).decode()}})
        else:
            raise _unsupported(kind, where, "an assistant message")
    message: dict[str, Any] = {"role": "assistant", "content": text_content(texts, None)}
    if thoughts:
        message["reasoning_content"] = "\n".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    return message


def _conversation(messages: Any) -> list[dict]:
    if messages is None:
        raise bad_request("'messages' is required")
    if not isinstance(messages, list):
        raise bad_request(f"'messages' must be an array, got {type_name(messages)}")
    if not messages:
        raise bad_request("'messages' must not be empty")
    turns: list[tuple[str, list[tuple[dict, str]]]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object, got {type_name(message)}")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise bad_request(f"{where}.role must be 'user' or 'assistant', got {role!r}")
        if "content" not in message:
            raise bad_request(f"{where}.content is required")
        blocks = _blocks(message["content"], f"{where}.content")
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    out: list[dict] = []
    for role, blocks in turns:
        if role == "user":
            out.extend(_user_messages(blocks))
        else:
            out.append(_assistant_message(blocks))
    return out


def _tools(tools: Any) -> list[dict] | None:
    declared = tool_declarations(tools)
    if declared is None:
        return None
    out = []
    for where, tool in declared:
        if tool.get("type") not in (None, "custom"):
            raise bad_request(f"{where}: server tool {tool['type']!r} is not supported; declare client tools "
                              "(name, description, input_schema)", "unsupported_tool")
        out.append(chat_function_tool(where, tool.get("name"), tool.get("description"), tool.get("input_schema"),
                                      "input_schema"))
    return out


def _tool_choice(choice: Any, params: dict[str, Any]) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise bad_request("'tool_choice' must be an object with type 'auto', 'any', 'tool' or 'none'",
                          "invalid_parameter")
    if choice["type"] == "tool":
        if not isinstance(choice.get("name"), str) or not choice["name"]:
            raise bad_request("'tool_choice.name' must be a non-empty string", "invalid_parameter")
        params["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        params["tool_choice"] = _TOOL_CHOICE[choice["type"]]
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None:
        if not isinstance(disable, bool):
            raise bad_request("'tool_choice.disable_parallel_tool_use' must be a boolean", "invalid_parameter")
        params["parallel_tool_calls"] = not disable


def parse_messages_body(body: Any) -> ValidatedChat:
    """Check an Anthropic Messages body and translate it; raise `GateError(400)` naming the first problem found.

    `max_tokens`, required by Anthropic, is optional here (the worker's own budget applies either way); when given it
    lands in `params["max_tokens"]`, which the worker honours as a cap, like chat completions' `max_tokens`.
    """
    if not isinstance(body, dict):
        raise bad_request(f"request body must be a JSON object, got {type_name(body)}")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("'model' must be a string")
    messages = []
    if body.get("system") is not None:
        system = _system_message(body["system"])
        if system is not None:
            messages.append(system)
    messages.extend(_conversation(body.get("messages")))
    tools = _tools(body.get("tools"))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request(f"'stream' must be a boolean, got {type_name(stream)}")
    params: dict[str, Any] = {}
    for key, kind in _SAMPLING:
        if body.get(key) is not None:
            check_param(key, kind, body[key])
            params[key] = body[key]
    stops = body.get("stop_sequences")
    if stops is not None:
        if not (isinstance(stops, list) and len(stops) <= _MAX_STOP_SEQUENCES and all(isinstance(s, str)
                                                                                       for s in stops)):
            raise bad_request(f"'stop_sequences' must be an array of at most {_MAX_STOP_SEQUENCES} strings",
                              "invalid_parameter")
        params["stop"] = stops
    _tool_choice(body.get("tool_choice"), params)
    # The translation above should only ever produce valid internal messages; checking costs little and keeps a
    # translation bug a 400 here instead of an error inside the worker.
    validate_messages(messages)
    return ValidatedChat(messages, tools, bool(stream), True, params, model)


# Rough characters per token of English text and code for BPE tokenizers like Qwen3's; and the few tokens of template
# glue (`<|im_start|>role\n … <|im_end|>\n`) each message costs.
_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 5


def estimate_input_tokens(chat: ValidatedChat) -> int:
    """An estimate of the prompt length for `count_tokens`, NOT the exact count: the gate holds no tokenizer and does
    not consult the worker for it. About 4 characters per token of text and tool schema, plus each message's template
    glue. The exact number is what the next real call reports as `usage.input_tokens`."""
    chars = 0
    for message in chat.messages:
        for key in ("content", "reasoning_content"):
            value = message.get(key)
            if isinstance(value, str):
                chars += len(value)
            elif isinstance(value, list):
                chars += sum(len(part["text"]) for part in value)
        for call in message.get("tool_calls") or ():
            chars += len(call["function"]["name"]) + len(call["function"]["arguments"])
    if chat.tools:
        chars += len(orjson.dumps(chat.tools))
    return math.ceil(chars / _CHARS_PER_TOKEN) + _TOKENS_PER_MESSAGE * len(chat.messages)
