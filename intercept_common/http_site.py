"""Start an aiohttp application on a TCP port or a unix socket, with the settings every server of ours wants.

- `handler_cancellation=True`: a client that hangs up cancels its handler. The gate learns of disconnects this way
  and the local engine drops the request from its batch.
- No access log: it is per-request work on the hot path and would record rollout ids.
A site that fails to start cleans its runner up before the error propagates, so a busy port leaks nothing.

The idiom every app of ours follows: its state is typed with `web.AppKey` (`app[KEY]`, no closures or attributes
standing in for it), and a resource that lives as long as the app (a client session) is made and closed by one
`app.cleanup_ctx` generator. The local engine adds one `on_shutdown` hook, for a reason given where it is added.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def start_site(app: web.Application, *, host: str = "127.0.0.1", port: int = 0, unix_path: str | None = None,
                     **runner_options: Any) -> tuple[web.AppRunner, str]:
    """Serve `app`; return its runner (call `await runner.cleanup()` to stop) and the URL it answers on.

    With `unix_path` the site listens on that socket and the URL is `unix:<path>`; else on `host:port` (0 picks a
    free port; the URL carries the bound one, IPv6 hosts bracketed).
    """
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, **runner_options)
    await runner.setup()
    try:
        if unix_path is not None:
            await web.UnixSite(runner, unix_path).start()
            return runner, f"unix:{unix_path}"
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    url = f"http://[{bound_host}]:{bound_port}" if ":" in bound_host else f"http://{bound_host}:{bound_port}"
    return runner, url
