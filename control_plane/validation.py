"""Validation of chat-completion request bodies.

Accepts what real agents send (design §7): content as a string or a list of text parts, `content: null` on
tool-call turns, unknown extra keys anywhere (`provider_specific_fields`, `store`, `metadata`, `cache_control`…).
Rejects, with a 400 that names the offending field, anything the worker could not turn into a prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import GateError

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})

# Sampling keys copied into `InterceptedRequest.params` when present and not null, with their accepted JSON types.
# The worker decides which of them, if any, may influence the policy (design §4: the policy's own sampling params win).
_NUMBER = "number"
_INT = "integer"
_BOOL = "boolean"
_STR = "string"
_OBJ = "object"
SAMPLING_KEYS: dict[str, str] = {
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "top_k": _INT,
    "min_p": _NUMBER,
    "max_tokens": _INT,
    "max_completion_tokens": _INT,
    "stop": "stop",
    "seed": _INT,
    "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER,
    "repetition_penalty": _NUMBER,
    "logprobs": _BOOL,
    "top_logprobs": _INT,
    "logit_bias": _OBJ,
    "parallel_tool_calls": _BOOL,
    "tool_choice": "tool_choice",
    "response_format": _OBJ,
    "reasoning_effort": _STR,
}

_MAX_STOP_SEQUENCES = 16


@dataclass
class ValidatedChat:
    """The parts of a valid chat-completion body the gate and the worker use."""

    messages: list[dict]
    tools: list[dict] | None
    stream: bool
    include_usage: bool
    params: dict[str, Any]
    model: str | None


def bad_request(message: str, code: str = "invalid_request") -> GateError:
    return GateError(400, message, code=code)


def parse_json_body(raw: bytes) -> Any:
    """Parse a request body as strict JSON, mapping every failure to a 400.

    orjson: about twice as fast as `json` on long conversations (this runs on every agent call), and stricter where
    it matters downstream — it rejects NaN/Infinity, lone surrogates (which would break tokenization later) and
    nesting deeper than 1024.
    """
    if not raw:
        raise bad_request("request body is empty; expected a JSON object", "invalid_json")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise bad_request("request body is nested too deeply", "invalid_json") from None
        raise bad_request(f"request body is not valid JSON: {exc}", "invalid_json") from None


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _check_text_parts(parts: list, where: str, allow_refusal: bool) -> None:
    for j, part in enumerate(parts):
        pwhere = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise bad_request(f"{pwhere} must be an object, got {type_name(part)}")
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad_request(f"{pwhere}.text must be a string")
        elif kind == "refusal" and allow_refusal:
            if not isinstance(part.get("refusal"), str):
                raise bad_request(f"{pwhere}.refusal must be a string")
        elif kind in ("image_url", "input_image", "image"):
            raise bad_request(f"{pwhere}: image content is not supported; this endpoint serves a text-only model",
                       "unsupported_content")
        elif kind in ("input_audio", "file", "audio"):
            raise bad_request(f"{pwhere}: {kind} content is not supported; only text parts are accepted",
                       "unsupported_content")
        else:
            raise bad_request(f"{pwhere}.type must be 'text', got {kind!r}")


def _check_content(msg: dict, where: str, role: str, has_tool_calls: bool) -> None:
    if "content" not in msg or msg["content"] is None:
        if role == "assistant":
            return  # tool-call-only turns (pi sends content: null; OpenAI allows omitting it)
        raise bad_request(f"{where}.content is required for role {role!r}")
    content = msg["content"]
    if isinstance(content, str):
        return
    if isinstance(content, list):
        _check_text_parts(content, f"{where}.content", allow_refusal=role == "assistant")
        return
    raise bad_request(f"{where}.content must be a string, null or a list of text parts, got {type_name(content)}")


def _check_tool_calls(tool_calls: Any, where: str) -> None:
    if not isinstance(tool_calls, list):
        raise bad_request(f"{where}.tool_calls must be an array, got {type_name(tool_calls)}")
    for k, call in enumerate(tool_calls):
        cwhere = f"{where}.tool_calls[{k}]"
        if not isinstance(call, dict):
            raise bad_request(f"{cwhere} must be an object")
        if not isinstance(call.get("id"), str) or not call["id"]:
            raise bad_request(f"{cwhere}.id must be a non-empty string")
        if call.get("type", "function") != "function":
            raise bad_request(f"{cwhere}.type must be 'function'")
        function = call.get("function")
        if not isinstance(function, dict):
            raise bad_request(f"{cwhere}.function must be an object")
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise bad_request(f"{cwhere}.function.name must be a non-empty string")
        if not isinstance(function.get("arguments"), str):
            raise bad_request(f"{cwhere}.function.arguments must be a string (JSON-encoded arguments)")


def validate_messages(messages: Any) -> list[dict]:
    if messages is None:
        raise bad_request("'messages' is required")
    if not isinstance(messages, list):
        raise bad_request(f"'messages' must be an array, got {type_name(messages)}")
    if not messages:
        raise bad_request("'messages' must not be empty")
    for i, msg in enumerate(messages):
        # The whole history is re-sent on every call: accept the common shapes cheaply and leave anything else
        # (text-part lists, and every invalid message) to the thorough check, which names the problem.
        if not _plainly_valid(msg):
            _validate_message(i, msg)
    return messages


def _plainly_valid(msg: Any) -> bool:
    """A fast, accept-only check: True only for messages `_validate_message` would also accept."""
    if type(msg) is not dict:
        return False
    role = msg.get("role")
    content = msg.get("content")
    name = msg.get("name")
    if name is not None and type(name) is not str:
        return False
    if role == "tool":
        call_id = msg.get("tool_call_id")
        return type(content) is str and type(call_id) is str and call_id != "" and "tool_calls" not in msg
    if type(role) is not str or role not in ROLES or (  # an unhashable role must not reach the set lookup
            type(content) is not str and (content is not None or role != "assistant")):
        return False
    tool_calls = msg.get("tool_calls")
    if tool_calls is None:
        return True
    if role != "assistant" or type(tool_calls) is not list:
        return False
    for call in tool_calls:
        if type(call) is not dict:
            return False
        function = call.get("function")
        call_id = call.get("id")
        if type(call_id) is not str or not call_id or call.get("type", "function") != "function":
            return False
        if type(function) is not dict or type(function.get("arguments")) is not str:
            return False
        fname = function.get("name")
        if type(fname) is not str or not fname:
            return False
    return True


def _validate_message(i: int, msg: Any) -> None:
    where = f"messages[{i}]"
    if not isinstance(msg, dict):
        raise bad_request(f"{where} must be an object, got {type_name(msg)}")
    role = msg.get("role")
    if type(role) is not str or role not in ROLES:
        raise bad_request(f"{where}.role must be one of {sorted(ROLES)}, got {role!r}")
    if "name" in msg and msg["name"] is not None and not isinstance(msg["name"], str):
        raise bad_request(f"{where}.name must be a string")
    tool_calls = msg.get("tool_calls")
    if tool_calls is not None:
        if role != "assistant":
            raise bad_request(f"{where}.tool_calls is only allowed on assistant messages")
        _check_tool_calls(tool_calls, where)
    _check_content(msg, where, role, bool(tool_calls))
    if role == "tool" and (not isinstance(msg.get("tool_call_id"), str) or not msg["tool_call_id"]):
        raise bad_request(f"{where}.tool_call_id is required for tool messages (a non-empty string)")


def validate_tools(tools: Any) -> list[dict] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise bad_request(f"'tools' must be an array, got {type_name(tools)}")
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise bad_request(f"{where} must be an object")
        if tool.get("type", "function") != "function":
            raise bad_request(f"{where}.type must be 'function', got {tool.get('type')!r}")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise bad_request(f"{where}.function must be an object")
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise bad_request(f"{where}.function.name must be a non-empty string")
        if "description" in function and function["description"] is not None and not isinstance(
            function["description"], str
        ):
            raise bad_request(f"{where}.function.description must be a string")
        if "parameters" in function and function["parameters"] is not None and not isinstance(
            function["parameters"], dict
        ):
            raise bad_request(f"{where}.function.parameters must be an object (a JSON schema)")
    return tools


def check_param(key: str, kind: str, value: Any) -> None:
    if kind == _NUMBER:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif kind == _INT:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == _BOOL:
        ok = isinstance(value, bool)
    elif kind == _STR:
        ok = isinstance(value, str)
    elif kind == _OBJ:
        ok = isinstance(value, dict)
    elif kind == "stop":
        ok = isinstance(value, str) or (
            isinstance(value, list) and len(value) <= _MAX_STOP_SEQUENCES and all(isinstance(s, str) for s in value)
        )
    else:  # tool_choice: "none" | "auto" | "required" | {"type": "function", "function": {"name": ...}}
        ok = value in ("none", "auto", "required") or isinstance(value, dict)
    if not ok:
        raise bad_request(f"'{key}' has an invalid value of type {type_name(value)}", "invalid_parameter")
    if key in ("max_tokens", "max_completion_tokens", "max_output_tokens") and value < 1:
        raise bad_request(f"'{key}' must be at least 1", "invalid_parameter")
    if key in ("temperature", "top_p", "min_p") and value < 0:
        raise bad_request(f"'{key}' must not be negative", "invalid_parameter")


def validate_chat_body(body: Any) -> ValidatedChat:
    """Check a parsed chat-completion body; raise `GateError(400)` naming the first problem found."""
    if not isinstance(body, dict):
        raise bad_request(f"request body must be a JSON object, got {type_name(body)}")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("'model' must be a string")
    messages = validate_messages(body.get("messages"))
    tools = validate_tools(body.get("tools"))
    stream = body.get("stream")
    if stream is None:
        stream = False
    elif not isinstance(stream, bool):
        raise bad_request(f"'stream' must be a boolean, got {type_name(stream)}")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise bad_request("'stream_options' must be an object")
        include_usage = options.get("include_usage", False)
        if include_usage is None:
            include_usage = False
        if not isinstance(include_usage, bool):
            raise bad_request("'stream_options.include_usage' must be a boolean")
    n = body.get("n")
    if n is not None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise bad_request("'n' must be a positive integer", "invalid_parameter")
        if n > 1:
            raise bad_request("'n' > 1 is not supported: each agent call gets exactly one completion",
                              "invalid_parameter")
    params: dict[str, Any] = {}
    for key, kind in SAMPLING_KEYS.items():
        value = body.get(key)
        if value is not None:
            check_param(key, kind, value)
            params[key] = value
    return ValidatedChat(messages, tools, stream, include_usage, params, model)
