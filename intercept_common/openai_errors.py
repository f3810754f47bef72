"""The one error body our HTTP servers answer OpenAI-dialect clients with (the gate, the relay, the local engine).

OpenAI's and vLLM's shape: `{"error": {"message", "type", "param", "code"}}`. Clients (the `openai` SDK, litellm,
pi) read `message` and `code`; `type` names the class of error (`invalid_request_error`, `authentication_error`,
...). Anthropic-dialect bodies are the gate's own concern (control_plane.dialects).
"""

from __future__ import annotations

from typing import Any


def openai_error_body(message: str, type: str = "invalid_request_error", *, code: Any = None,
                      param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
