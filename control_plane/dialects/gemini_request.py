"""A Gemini `generateContent` request body → the internal conversation (OpenAI chat `messages` + `tools`).

    systemInstruction {parts: [{text}]}      → a leading {"role": "system"} message
    contents, role "user" (or "function"):
        text parts                           → {"role": "user"} (a content's texts joined, as Gemini reads them)
        functionResponse parts               → one {"role": "tool", "tool_call_id"} each, in place
    contents, role "model":
        text parts with `thought: true`      → reasoning_content (joined: a stream's pieces are one thought)
        other text parts                     → content (joined)
        functionCall parts                   → tool_calls: id = functionCall.id, arguments = compact JSON of `args`
    consecutive contents of one role         → merged first
    tools [{functionDeclarations: [{name, description, parametersJsonSchema | parameters}]}]
                                             → [{"type": "function", "function": {name, description, parameters}}]
    toolConfig.functionCallingConfig.mode    → tool_choice (AUTO auto, ANY required or its one allowed name, NONE)
    generationConfig                         → maxOutputTokens max_tokens, temperature, topP top_p, topK top_k,
                                               stopSequences stop, seed, presencePenalty, frequencyPenalty

Our replies always carry `functionCall.id` (the worker's tool-call id), so the agent's echo maps back onto the very
assistant message the worker holds. A history built elsewhere may lack ids: a call then gets `call_<content>_<part>`
(stable across re-sends) and a `functionResponse` without id answers the oldest unanswered call of its name. A
`functionResponse.response` of the form `{"output": "<text>"}` (what Gemini CLI sends) becomes that text; any other
response object becomes its compact JSON. `thinkingConfig`, `responseMimeType`, `responseSchema`, `safetySettings`,
`cachedContent`, `thoughtSignature` and other unknown fields are accepted and not used (the policy's own sampling
settings win, design §4); images, files, executable code and non-function tools are refused with a 400 naming them.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from ..validation import ValidatedChat, bad_request, check_param, type_name, validate_messages
from .base import chat_function_tool

_MEDIA_PARTS = ("inlineData", "fileData", "executableCode", "codeExecutionResult")
_SNAKE = re.compile(r"_([a-z0-9])")


def _fields(message: dict) -> dict:
    """A request object's own fields by their JSON (lowerCamelCase) names. Google's API parses protobuf JSON, which
    accepts the proto's snake_case names too, and the Python SDK sends some of them so (`parameters_json_schema`).
    Only an object's own keys: the JSON schemas and function arguments inside stay as they are."""
    if not any("_" in key for key in message):
        return message
    out = {_SNAKE.sub(lambda m: m.group(1).upper(), key): value for key, value in message.items() if "_" in key}
    out.update((key, value) for key, value in message.items() if "_" not in key)  # the camelCase form wins
    return out
_FUNCTION_MODES = {"AUTO": "auto", "ANY": "required", "NONE": "none", "VALIDATED": "auto"}
_SAMPLING = (("maxOutputTokens", "max_tokens", "integer"), ("temperature", "temperature", "number"),
             ("topP", "top_p", "number"), ("topK", "top_k", "integer"), ("seed", "seed", "integer"),
             ("presencePenalty", "presence_penalty", "number"), ("frequencyPenalty", "frequency_penalty", "number"))
_MAX_STOP_SEQUENCES = 16


def _parts(content: Any, where: str) -> list[tuple[dict, str]]:
    if not isinstance(content, dict):
        raise bad_request(f"{where} must be an object (a Content), got {type_name(content)}")
    parts = content.get("parts", [])
    if not isinstance(parts, list):
        raise bad_request(f"{where}.parts must be an array, got {type_name(parts)}")
    out = []
    for j, part in enumerate(parts):
        pwhere = f"{where}.parts[{j}]"
        if not isinstance(part, dict):
            raise bad_request(f"{pwhere} must be an object, got {type_name(part)}")
        part = _fields(part)
        for kind in _MEDIA_PARTS:
            if part.get(kind) is not None:
                raise bad_request(f"{pwhere}: {kind} is not supported; this endpoint serves a text-only model",
                                  "unsupported_content")
        if part.get("text") is not None and not isinstance(part["text"], str):
            raise bad_request(f"{pwhere}.text must be a string")
        out.append((part, pwhere))
    return out


def _system_message(system: Any) -> dict | None:
    texts = []
    for part, where in _parts(system, "systemInstruction"):
        if part.get("text") is None:
            raise bad_request(f"{where}: systemInstruction parts must be text parts")
        texts.append(part["text"])
    return {"role": "system", "content": "".join(texts)} if texts else None


class _CallIds:
    """Tool-call ids of one conversation: the given ones, or stable stand-ins; answers pair with their calls."""

    def __init__(self) -> None:
        self._open: list[tuple[str, str]] = []  # (name, id) of the calls not yet answered, oldest first

    def called(self, call: dict, index: int, part: int, where: str) -> tuple[str, str]:
        name = call.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request(f"{where}.functionCall.name must be a non-empty string")
        call_id = call.get("id")
        if call_id is None or call_id == "":
            call_id = f"call_{index}_{part}"
        elif not isinstance(call_id, str):
            raise bad_request(f"{where}.functionCall.id must be a string")
        self._open.append((name, call_id))
        return name, call_id

    def answered(self, response: dict, where: str) -> str:
        name, call_id = response.get("name"), response.get("id")
        if call_id is not None and call_id != "":
            if not isinstance(call_id, str):
                raise bad_request(f"{where}.functionResponse.id must be a string")
            self._open = [entry for entry in self._open if entry[1] != call_id]
            return call_id
        for k, (open_name, open_id) in enumerate(self._open):
            if open_name == name:
                del self._open[k]
                return open_id
        raise bad_request(f"{where}.functionResponse has no id and answers no earlier functionCall named {name!r}")


def _tool_message(part: dict, where: str, ids: _CallIds) -> dict:
    response = part["functionResponse"]
    if not isinstance(response, dict):
        raise bad_request(f"{where}.functionResponse must be an object")
    response = _fields(response)
    if not isinstance(response.get("name", ""), str):
        raise bad_request(f"{where}.functionResponse.name must be a string")
    if response.get("parts"):
        raise bad_request(f"{where}.functionResponse.parts (media) is not supported; this endpoint serves a "
                          "text-only model", "unsupported_content")
    payload = response.get("response", {})
    if not isinstance(payload, dict):
        raise bad_request(f"{where}.functionResponse.response must be an object")
    if set(payload) == {"output"} and isinstance(payload["output"], str):
        text = payload["output"]
    else:
        text = orjson.dumps(payload).decode()
    return {"role": "tool", "tool_call_id": ids.answered(response, where), "content": text}


def _user_messages(parts: list[tuple[dict, str]], ids: _CallIds) -> list[dict]:
    out: list[dict] = []
    texts: list[str] = []
    for part, where in parts:
        if part.get("functionResponse") is not None:
            if texts:
                out.append({"role": "user", "content": "".join(texts)})
                texts = []
            out.append(_tool_message(part, where, ids))
        elif part.get("text") is not None:
            if not part.get("thought"):  # a client's own thoughts in a user turn: nothing to render
                texts.append(part["text"])
        elif part.get("functionCall") is not None:
            raise bad_request(f"{where}: functionCall parts belong in a 'model' content")
        # other parts (e.g. only a thoughtSignature, videoMetadata) carry nothing to render
    if texts or not out:
        out.append({"role": "user", "content": "".join(texts)})
    return out


def _model_message(parts: list[tuple[dict, str]], index: int, ids: _CallIds) -> dict:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict] = []
    for j, (part, where) in enumerate(parts):
        if part.get("functionCall") is not None:
            call = part["functionCall"]
            if not isinstance(call, dict):
                raise bad_request(f"{where}.functionCall must be an object")
            name, call_id = ids.called(call, index, j, where)
            args = call.get("args")
            if args is None:
                args = {}
            if not isinstance(args, dict):
                raise bad_request(f"{where}.functionCall.args must be an object, got {type_name(args)}")
            calls.append({"id": call_id, "type": "function",
                          "function": {"name": name, "arguments": orjson.dumps(args).decode()}})
        elif part.get("text") is not None:
            (thoughts if part.get("thought") else texts).append(part["text"])
        elif part.get("functionResponse") is not None:
            raise bad_request(f"{where}: functionResponse parts belong in a 'user' content")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    return message


def _conversation(contents: Any) -> list[dict]:
    if contents is None:
        raise bad_request("'contents' is required")
    if not isinstance(contents, list):
        raise bad_request(f"'contents' must be an array, got {type_name(contents)}")
    if not contents:
        raise bad_request("'contents' must not be empty")
    turns: list[tuple[str, int, list[tuple[dict, str]]]] = []
    for i, content in enumerate(contents):
        where = f"contents[{i}]"
        parts = _parts(content, where)
        role = content.get("role") or "user"
        if role == "function":  # the older name of the role that carries functionResponse parts
            role = "user"
        if role not in ("user", "model"):
            raise bad_request(f"{where}.role must be 'user' or 'model', got {role!r}")
        if turns and turns[-1][0] == role:
            turns[-1][2].extend(parts)
        else:
            turns.append((role, i, parts))
    ids = _CallIds()
    out: list[dict] = []
    for role, index, parts in turns:
        out.extend(_user_messages(parts, ids) if role == "user" else [_model_message(parts, index, ids)])
    return out


def _tools(tools: Any) -> list[dict] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise bad_request(f"'tools' must be an array, got {type_name(tools)}")
    out = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise bad_request(f"{where} must be an object")
        tool = _fields(tool)
        others = sorted(key for key, value in tool.items() if key != "functionDeclarations" and value is not None)
        if others:
            raise bad_request(f"{where}: tool {others[0]!r} is not supported; declare functions "
                              "(functionDeclarations)", "unsupported_tool")
        declarations = tool.get("functionDeclarations") or []
        if not isinstance(declarations, list):
            raise bad_request(f"{where}.functionDeclarations must be an array")
        for j, decl in enumerate(declarations):
            dwhere = f"{where}.functionDeclarations[{j}]"
            if not isinstance(decl, dict):
                raise bad_request(f"{dwhere} must be an object")
            decl = _fields(decl)
            schema_field = "parametersJsonSchema" if decl.get("parametersJsonSchema") is not None else "parameters"
            out.append(chat_function_tool(dwhere, decl.get("name"), decl.get("description"), decl.get(schema_field),
                                          schema_field))
    return out


def _tool_choice(config: Any, params: dict[str, Any]) -> None:
    if config is None:
        return
    calling = _fields(config).get("functionCallingConfig") if isinstance(config, dict) else None
    if calling is None:
        return
    calling = _fields(calling) if isinstance(calling, dict) else {"mode": None}
    mode = calling.get("mode") or "AUTO"
    if mode not in _FUNCTION_MODES:
        raise bad_request("'toolConfig.functionCallingConfig.mode' must be AUTO, ANY, NONE or VALIDATED",
                          "invalid_parameter")
    allowed = calling.get("allowedFunctionNames")
    if mode == "ANY" and isinstance(allowed, list) and len(allowed) == 1 and isinstance(allowed[0], str):
        params["tool_choice"] = {"type": "function", "function": {"name": allowed[0]}}
    else:
        params["tool_choice"] = _FUNCTION_MODES[mode]


def _generation_config(config: Any, params: dict[str, Any]) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        raise bad_request(f"'generationConfig' must be an object, got {type_name(config)}")
    config = _fields(config)
    for key, param, kind in _SAMPLING:
        value = config.get(key)
        if value is None:
            continue
        if kind == "integer" and isinstance(value, float) and value.is_integer():
            value = int(value)  # the SDKs type topK as a float: 40.0 is 40
        check_param(key, kind, value)
        if param == "max_tokens" and value < 1:
            raise bad_request("'generationConfig.maxOutputTokens' must be at least 1", "invalid_parameter")
        params[param] = value
    count = config.get("candidateCount")
    if count is not None and count != 1:
        raise bad_request("'generationConfig.candidateCount' other than 1 is not supported: each call gets exactly "
                          "one candidate", "invalid_parameter")
    stops = config.get("stopSequences")
    if stops is not None:
        if not (isinstance(stops, list) and len(stops) <= _MAX_STOP_SEQUENCES
                and all(isinstance(s, str) for s in stops)):
            raise bad_request(f"'generationConfig.stopSequences' must be an array of at most {_MAX_STOP_SEQUENCES} "
                              "strings", "invalid_parameter")
        params["stop"] = stops


def parse_generate_body(body: Any, model: str, stream: bool) -> ValidatedChat:
    """Check a `generateContent` body and translate it; raise `GateError(400)` naming the first problem found.
    `model` and `stream` come from the path (`models/{model}:generateContent` / `:streamGenerateContent`)."""
    if not isinstance(body, dict):
        raise bad_request(f"request body must be a JSON object, got {type_name(body)}")
    body = _fields(body)
    messages = []
    system = body.get("systemInstruction")
    if system is not None:
        message = _system_message(system)
        if message is not None:
            messages.append(message)
    messages.extend(_conversation(body.get("contents")))
    tools = _tools(body.get("tools"))
    params: dict[str, Any] = {}
    _generation_config(body.get("generationConfig"), params)
    _tool_choice(body.get("toolConfig"), params)
    validate_messages(messages)  # a translation bug must surface as a 400 here, not inside the worker
    return ValidatedChat(messages, tools, stream, True, params, model)


def parse_count_tokens_body(body: Any, model: str) -> ValidatedChat:
    """`countTokens`: `{contents}` or `{generateContentRequest: {contents, systemInstruction, tools, …}}`."""
    if isinstance(body, dict) and isinstance(_fields(body).get("generateContentRequest"), dict):
        body = _fields(body)["generateContentRequest"]
    return parse_generate_body(body, model, False)
