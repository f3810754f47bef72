"""Agent chat messages → the plain shape the chat template renders, and semantic equality between them.

Agents re-send the whole conversation on every call, each in its own dialect (design §7): pi sends user content as a
list of text parts and `content: null` on tool-call-only turns, mini-swe-agent adds `provider_specific_fields`, and
clients re-serialize the tool-call arguments we returned (`{"command": "ls"}` for our `{"command":"ls"}`). The chat
template needs strings for content and dicts for arguments, and the prompt assembler needs to know whether a request
merely repeats what it already holds. Both questions are answered here, without touching token ids.
"""

from __future__ import annotations

import json
from typing import Any

# Keys the chat template (or a trajectory reader) can use; everything else an agent adds is dropped.
_KEPT_KEYS = ("role", "content", "reasoning_content", "tool_calls", "tool_call_id", "name")
_ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role
_ROLES = ("system", "user", "assistant", "tool")
# How text parts are joined into one string: vLLM's chat preprocessing joins them with a newline too.
TEXT_PART_SEPARATOR = "\n"


class MessageFormatError(ValueError):
    """A message the chat template cannot render (unknown role, image parts, malformed tool call)."""


def content_to_text(content: Any, where: str = "content") -> str:
    """Content as one string: `None` → "", a list of text parts → their texts joined by a newline."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise MessageFormatError(f"{where}[{i}]: only text content parts are supported, got {kind!r}")
        return TEXT_PART_SEPARATOR.join(texts)
    raise MessageFormatError(f"{where} must be a string, null or a list of text parts, got {type(content).__name__}")


def parse_arguments(arguments: Any) -> Any:
    """Tool-call arguments as a dict when they are a JSON object; anything else is returned unchanged (a string).

    The Qwen3 template renders dict arguments with `tojson` and string arguments verbatim, so keeping an invalid JSON
    string as it is still renders what the agent sent; `count_unparsed_arguments` reports how often that happens.
    """
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}  # clients send "" or null for a call without arguments
    if isinstance(arguments, str):
        try:
            decoded = json.loads(arguments)
        except ValueError:
            return arguments
        return decoded if isinstance(decoded, dict) else arguments
    return arguments


def normalize_tool_call(tool_call: Any, where: str = "tool_calls") -> dict:
    """`{"id"?, "type": "function", "function": {"name", "arguments": dict | str}}`, extra keys dropped."""
    if not isinstance(tool_call, dict):
        raise MessageFormatError(f"{where}: a tool call must be an object")
    function = tool_call.get("function", tool_call)  # tolerate the flat {"name", "arguments"} shape
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise MessageFormatError(f"{where}: a tool call needs function.name (a non-empty string)")
    normalized: dict[str, Any] = {
        "type": "function",
        "function": {"name": function["name"], "arguments": parse_arguments(function.get("arguments"))},
    }
    if isinstance(tool_call.get("id"), str):
        normalized["id"] = tool_call["id"]
    return normalized


def normalize_message(message: Any, index: int = 0) -> dict:
    """One message in the shape the chat template renders: string content, dict arguments, known keys only.

    Assistant messages keep `reasoning_content` (also accepted as `reasoning`); a think block echoed inside the
    content is split off the way the Qwen3 template itself does, so both echo styles compare equal.
    Normalizing an already normalized message returns an equal message.
    """
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise MessageFormatError(f"{where} must be an object")
    role = _ROLE_ALIASES.get(message.get("role"), message.get("role"))
    if role not in _ROLES:
        raise MessageFormatError(f"{where}.role must be one of {', '.join(_ROLES)}, got {message.get('role')!r}")
    normalized: dict[str, Any] = {"role": role, "content": content_to_text(message.get("content"), f"{where}.content")}
    if role == "assistant":
        reasoning = message.get("reasoning_content", message.get("reasoning"))
        if reasoning is not None:
            normalized["reasoning_content"] = content_to_text(reasoning, f"{where}.reasoning_content")
        elif "</think>" in normalized["content"]:
            content = normalized["content"]  # split exactly as the Qwen3 template does: first and last </think>
            thought = content.split("</think>", 1)[0].rstrip("\n").split("<think>")[-1]
            normalized["reasoning_content"] = thought.lstrip("\n")
            normalized["content"] = content.rpartition("</think>")[2].lstrip("\n")
        tool_calls = message.get("tool_calls")
        if tool_calls:
            if not isinstance(tool_calls, list):
                raise MessageFormatError(f"{where}.tool_calls must be a list")
            normalized["tool_calls"] = [
                normalize_tool_call(call, f"{where}.tool_calls[{i}]") for i, call in enumerate(tool_calls)
            ]
    for key in ("tool_call_id", "name"):
        if isinstance(message.get(key), str):
            normalized[key] = message[key]
    return normalized


def normalize_messages(messages: Any) -> list[dict]:
    """`normalize_message` over a request's message list (which must be a non-empty list)."""
    if not isinstance(messages, list) or not messages:
        raise MessageFormatError("messages must be a non-empty list")
    return [normalize_message(message, i) for i, message in enumerate(messages)]


def count_unparsed_arguments(messages: list[dict]) -> int:
    """Tool calls of normalized messages whose arguments stayed a string (not a JSON object)."""
    return sum(
        isinstance(call["function"]["arguments"], str)
        for message in messages
        for call in message.get("tool_calls") or ()
    )


def _same_text(a: str, b: str) -> bool:
    # Exact equality first: it is the common case and costs a memcmp even for a 100 kB tool result.
    return a == b or a.split() == b.split()


def _same_arguments(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return _same_text(a, b)
    return a == b


def normalized_equivalent(a: dict, b: dict) -> bool:
    """`messages_equivalent` for messages that are already normalized (the assembler's hot path)."""
    if a["role"] != b["role"] or not _same_text(a["content"], b["content"]):
        return False
    # Reasoning is compared only when both sides carry some: agents may drop it when echoing our reply.
    reasoning_a, reasoning_b = a.get("reasoning_content"), b.get("reasoning_content")
    if reasoning_a and reasoning_b and not _same_text(reasoning_a, reasoning_b):
        return False
    calls_a, calls_b = a.get("tool_calls") or [], b.get("tool_calls") or []
    if len(calls_a) != len(calls_b):
        return False
    # Tool-call ids are not rendered by the template, and agents drop or rewrite them: not compared.
    return all(
        x["function"]["name"] == y["function"]["name"]
        and _same_arguments(x["function"]["arguments"], y["function"]["arguments"])
        for x, y in zip(calls_a, calls_b)
    )


def messages_equivalent(a: dict, b: dict) -> bool:
    """Whether two chat messages mean the same turn, as an agent echoing a conversation back would see it.

    Equal are: content as a string or as text parts, whitespace-only differences, `null` vs "" content, tool-call
    arguments as any serialization of the same JSON object, present or missing tool-call ids, extra keys, and
    reasoning present on one side only. Raises `MessageFormatError` when either message is malformed.
    """
    return normalized_equivalent(normalize_message(a), normalize_message(b))


def tools_equivalent(a: list[dict] | None, b: list[dict] | None) -> bool:
    """Whether two `tools` lists declare the same functions (key order and `None` vs `[]` ignored)."""
    if a == b:
        return True
    return json.dumps(a or [], sort_keys=True) == json.dumps(b or [], sort_keys=True)
