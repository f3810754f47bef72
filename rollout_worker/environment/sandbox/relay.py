"""Host side of the sandbox's only network path (design §7): an HTTP proxy on a unix socket.

The socket is bind-mounted into the sandbox, where `inner_init.py` pipes 127.0.0.1:<port> to it. Every request
is checked against this rollout's path prefix (`/rollout/<id>/`) before it is forwarded to the gate, so a
sandbox cannot even address another rollout; the gate's per-rollout key check stays the real lock. Responses are
streamed back chunk by chunk (pi always uses SSE).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp import hdrs, web

from intercept_common.http_site import start_site
from intercept_common.openai_errors import openai_error_body

# The app's state, typed (aiohttp's AppKey): the upstream client session, created and closed by its cleanup context.
UPSTREAM_SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("upstream_session", aiohttp.ClientSession)

logger = logging.getLogger(__name__)

# Hop-by-hop headers (RFC 9110 §7.6.1) plus the ones aiohttp recomputes.
_DROP_HEADERS = {
    hdrs.CONNECTION, hdrs.KEEP_ALIVE, hdrs.PROXY_AUTHENTICATE, hdrs.PROXY_AUTHORIZATION, hdrs.TE, hdrs.TRAILER,
    hdrs.TRANSFER_ENCODING, hdrs.UPGRADE, hdrs.HOST, hdrs.CONTENT_LENGTH,
}
_DROP_HEADERS_LOWER = {h.lower() for h in _DROP_HEADERS}


def _openai_error(status: int, message: str, code: str) -> web.Response:
    return web.json_response(openai_error_body(message, code=code), status=status)


class GateProxy:
    """Forwards HTTP requests arriving on `socket_path` to the gate behind `upstream_base_url`.

    Only paths under `/rollout/<rollout_id>/` pass. `upstream_timeout_s` bounds a whole request, including the
    engine's generation time.
    """

    def __init__(self, socket_path: Path, upstream_base_url: str, rollout_id: str, upstream_timeout_s: float = 1800.0):
        parts = urlsplit(upstream_base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"endpoint base_url must be an http(s) URL, got {upstream_base_url!r}")
        self.socket_path = Path(socket_path)
        self.upstream_origin = f"{parts.scheme}://{parts.netloc}"
        self.allowed_prefix = f"/rollout/{rollout_id}/"
        self.upstream_timeout_s = upstream_timeout_s
        self.requests_forwarded = 0
        self.requests_refused = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        app.cleanup_ctx.append(self._upstream_session)
        try:
            self._runner, _ = await start_site(app, unix_path=str(self.socket_path))
            os.chmod(self.socket_path, 0o600)
        except BaseException:
            await self.close()
            raise

    async def _upstream_session(self, app: web.Application):
        """aiohttp's cleanup context: the upstream client session lives exactly as long as the relay's app."""
        app[UPSTREAM_SESSION] = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.upstream_timeout_s, sock_connect=10), auto_decompress=False
        )
        try:
            yield
        finally:
            await app[UPSTREAM_SESSION].close()

    async def close(self) -> None:
        """Stop serving, drop open connections and remove the socket file. Idempotent."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.socket_path.unlink(missing_ok=True)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path
        if not path.startswith(self.allowed_prefix) or "/../" in path or "%2e" in path.lower():
            self.requests_refused += 1
            return _openai_error(403, "this sandbox may only reach its own rollout endpoint", "forbidden_path")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_HEADERS_LOWER}
        body = await request.read()
        response: web.StreamResponse | None = None
        try:
            async with request.app[UPSTREAM_SESSION].request(
                request.method, self.upstream_origin + str(request.rel_url), headers=headers, data=body,
                allow_redirects=False,
            ) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in upstream.headers.items():
                    if key.lower() not in _DROP_HEADERS_LOWER:
                        response.headers.add(key, value)
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                self.requests_forwarded += 1
                return response
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("gate proxy for %s: upstream failed: %r", self.allowed_prefix, exc)
            if response is not None and response.prepared:
                raise  # headers already sent: dropping the connection is the only honest signal left
            return _openai_error(502, f"the rollout gate is unreachable: {type(exc).__name__}", "gate_unreachable")
