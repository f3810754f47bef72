"""OpenAI-style errors: `{"error": {"message", "type", "code"}}` with the matching HTTP status."""

from __future__ import annotations

import json

from aiohttp import web

from intercept_common.openai_errors import openai_error_body

# The `type` OpenAI uses for each status family; clients (openai SDKs, litellm) map on the status, humans read `type`.
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class RolloutClosed(Exception):
    """The rollout is closed: no more requests will arrive on it and its pending requests were failed."""


class GateError(Exception):
    """An error the gate answers with an OpenAI-style JSON body (or an SSE error event inside a stream)."""

    def __init__(self, status: int, message: str, *, code: str | None = None, type: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers  # e.g. Retry-After on 429/503
        if not 400 <= status <= 599:
            raise ValueError(f"error status must be 4xx or 5xx, got {status}")
        self.status = status
        self.message = message
        self.code = code
        self.type = type or error_type_for(status)

    def body(self) -> dict:
        return openai_error_body(self.message, self.type, code=self.code)

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            status=self.status,
            body=json.dumps(self.body()).encode(),
            content_type="application/json",
            headers=headers,
        )


def error_type_for(status: int) -> str:
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "invalid_request_error" if status < 500 else "server_error"
