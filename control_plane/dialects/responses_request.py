"""An OpenAI Responses request body → the internal conversation (OpenAI chat `messages` + `tools`).

    instructions                              → a leading {"role": "system"} message (per request: OpenAI does not
                                                carry instructions over from a previous response either)
    previous_response_id                      → that response's whole conversation (its inputs and its output),
                                                from the rollout's `ResponseHistory`, before the new `input`
    input: "text"                             → one {"role": "user"} message
    message items (input_text / output_text)  → {"role": user | system | developer | assistant}
    reasoning + assistant message + function_call items in a row
                                              → ONE assistant message: reasoning_content, content, tool_calls
                                                (id = call_id), the inverse of how our reply renders
    function_call_output                      → {"role": "tool", "tool_call_id": call_id}
    tools [{"type": "function", name, description, parameters}]
                                              → [{"type": "function", "function": {name, description, parameters}}]
`strict`, `store`, `include`, `text`, `reasoning`, `metadata` and other unknown fields are accepted; images, files and
non-function tools (web search, custom grammar tools, …) are refused with a 400 naming them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..validation import ValidatedChat, bad_request, check_param, type_name, validate_messages
from .base import chat_function_tool, text_content, tool_declarations

_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
_MEDIA_PARTS = frozenset({"input_image", "input_file", "input_audio", "image", "file"})
_MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})


@dataclass
class ResponsesContext:
    """What the reply echoes and what the rollout's history records once the reply is sent."""

    new_messages: list[dict]  # this request's own input, internal form, without the instructions
    previous_response_id: str | None
    echo: dict[str, Any] = field(default_factory=dict)  # request fields a response object repeats


class ResponseHistory:
    """The responses one rollout produced, for `previous_response_id`.

    Each entry holds only what its request added (input + our reply) and a link to its predecessor, so storing a turn
    costs its own size; `conversation()` walks the chain. Kept for every response whatever `store` says (a later
    request may name any of them) and dropped with the rollout.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str | None, list[dict]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, response_id: str, previous_id: str | None, messages: list[dict]) -> None:
        self._entries[response_id] = (previous_id, messages)

    def conversation(self, response_id: str) -> list[dict] | None:
        """The full internal conversation up to and including that response's output; None if unknown."""
        if response_id not in self._entries:
            return None
        parts = []
        current: str | None = response_id
        while current is not None:
            current, messages = self._entries[current]
            parts.append(messages)
        return [message for part in reversed(parts) for message in part]


def _texts(content: Any, where: str) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise bad_request(f"{where} must be a string or an array of content parts, got {type_name(content)}")
    texts = []
    for j, part in enumerate(content):
        pwhere = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif kind in _MEDIA_PARTS:
            raise bad_request(f"{pwhere}: {kind} content is not supported; this endpoint serves a text-only model",
                              "unsupported_content")
        else:
            raise bad_request(f"{pwhere} must be a text part (input_text / output_text with a string 'text')")
    return texts


def _reasoning_text(item: dict, where: str) -> str:
    """The reasoning's own text (`content` reasoning_text parts), else its summary; "" when only encrypted."""
    for key, kind in (("content", "reasoning_text"), ("summary", "summary_text")):
        parts = item.get(key)
        if parts is None:
            continue
        if not isinstance(parts, list):
            raise bad_request(f"{where}.{key} must be an array")
        texts = []
        for j, part in enumerate(parts):
            if not isinstance(part, dict) or part.get("type") != kind or not isinstance(part.get("text"), str):
                raise bad_request(f"{where}.{key}[{j}] must be a {kind} part with a string 'text'")
            texts.append(part["text"])
        if texts:
            return "\n".join(texts)
    return ""


def _nonempty_str(item: dict, key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise bad_request(f"{where}.{key} must be a non-empty string")
    return value


def input_messages(items: Any) -> list[dict]:
    """`input` (a string or items) as internal messages."""
    if items is None:
        return []
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise bad_request(f"'input' must be a string or an array of items, got {type_name(items)}")
    out: list[dict] = []
    open_turn: dict | None = None  # the assistant message that reasoning / output text / function calls extend

    def assistant() -> dict:
        nonlocal open_turn
        if open_turn is None:
            open_turn = {"role": "assistant", "content": None}
            out.append(open_turn)
        return open_turn

    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad_request(f"{where} must be an object, got {type_name(item)}")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "reasoning":
            if open_turn is not None and (open_turn["content"] is not None or "tool_calls" in open_turn
                                          or "reasoning_content" in open_turn):
                open_turn = None  # a new assistant turn begins with its reasoning
            text = _reasoning_text(item, where)
            if text:
                assistant()["reasoning_content"] = text
            else:
                assistant()
        elif kind == "message" and item.get("role") == "assistant":
            if open_turn is not None and (open_turn["content"] is not None or "tool_calls" in open_turn):
                open_turn = None
            assistant()["content"] = text_content(_texts(item.get("content"), f"{where}.content"))
        elif kind == "function_call":
            arguments = item.get("arguments")
            if not isinstance(arguments, str):
                raise bad_request(f"{where}.arguments must be a string (JSON-encoded arguments)")
            call = {"id": _nonempty_str(item, "call_id", where), "type": "function",
                    "function": {"name": _nonempty_str(item, "name", where), "arguments": arguments}}
            assistant().setdefault("tool_calls", []).append(call)
        elif kind == "message":
            role = item.get("role")
            if role not in _MESSAGE_ROLES:
                raise bad_request(f"{where}.role must be one of {sorted(_MESSAGE_ROLES)}, got {role!r}")
            open_turn = None
            out.append({"role": role, "content": text_content(_texts(item.get("content"), f"{where}.content"))})
        elif kind == "function_call_output":
            open_turn = None
            output = item.get("output")
            content = text_content(_texts(output, f"{where}.output")) if output is not None else ""
            out.append({"role": "tool", "tool_call_id": _nonempty_str(item, "call_id", where), "content": content})
        else:
            raise bad_request(f"{where}: input item type {kind!r} is not supported; this endpoint takes messages, "
                              "function_call, function_call_output and reasoning items", "unsupported_item")
    return out


def _tools(tools: Any) -> list[dict] | None:
    declared = tool_declarations(tools)
    if declared is None:
        return None
    out = []
    for where, tool in declared:
        if tool.get("type") != "function":
            raise bad_request(f"{where}: tool type {tool.get('type')!r} is not supported; only function tools",
                              "unsupported_tool")
        # The flat Responses shape; a chat-style nested `function` object is tolerated (some clients send it).
        spec = tool["function"] if isinstance(tool.get("function"), dict) else tool
        # `strict` constrains sampling, not the prompt: dropped.
        out.append(chat_function_tool(where, spec.get("name"), spec.get("description"), spec.get("parameters"),
                                      "parameters"))
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    check_param("tool_choice", "tool_choice", choice)
    return choice


def parse_responses_body(body: Any, history: ResponseHistory) -> tuple[ValidatedChat, ResponsesContext]:
    """Check a Responses body and translate it; raise `GateError(400)` naming the first problem found."""
    if not isinstance(body, dict):
        raise bad_request(f"request body must be a JSON object, got {type_name(body)}")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("'model' must be a string")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise bad_request("'instructions' must be a string")
    previous_id = body.get("previous_response_id")
    prior: list[dict] = []
    if previous_id is not None:
        if not isinstance(previous_id, str):
            raise bad_request("'previous_response_id' must be a string")
        found = history.conversation(previous_id)
        if found is None:
            raise bad_request(f"Previous response with id '{previous_id}' not found.", "previous_response_not_found")
        prior = found
    new_messages = input_messages(body.get("input"))
    messages = ([{"role": "system", "content": instructions}] if instructions else []) + prior + new_messages
    if not messages:
        raise bad_request("'input' is required (a string or a non-empty array of items)")
    tools = _tools(body.get("tools"))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request(f"'stream' must be a boolean, got {type_name(stream)}")
    params: dict[str, Any] = {}
    for key, param, kind in (("temperature", "temperature", "number"), ("top_p", "top_p", "number"),
                             ("max_output_tokens", "max_tokens", "integer"),  # the worker caps a turn by this
                             ("parallel_tool_calls", "parallel_tool_calls", "boolean")):
        if body.get(key) is not None:
            check_param(key, kind, body[key])
            params[param] = body[key]
    if body.get("tool_choice") is not None:
        params["tool_choice"] = _tool_choice(body["tool_choice"])
    validate_messages(messages)  # a translation bug must surface as a 400 here, not inside the worker
    echo = {"instructions": instructions, "tools": body.get("tools") or [],
            "tool_choice": body.get("tool_choice") or "auto",
            "parallel_tool_calls": params.get("parallel_tool_calls", True),
            "max_output_tokens": params.get("max_tokens"), "previous_response_id": previous_id,
            "store": body.get("store") if isinstance(body.get("store"), bool) else True,
            "metadata": body.get("metadata") if isinstance(body.get("metadata"), dict) else {}}
    chat = ValidatedChat(messages, tools, bool(stream), True, params, model)
    return chat, ResponsesContext(new_messages, previous_id, echo)
