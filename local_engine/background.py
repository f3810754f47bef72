"""Run an `EngineServer` on loopback in a background thread with its own event loop (tests, in-process use)."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from local_engine.server import EngineServer


class BackgroundEngine:
    """`with BackgroundEngine(server) as engine: engine.url` — serves until the block ends, on every path."""

    def __init__(self, server: EngineServer, host: str = "127.0.0.1", startup_timeout_s: float = 30.0):
        self.server = server
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self._runner = web.AppRunner(self.server.app(), access_log=None, handler_cancellation=True)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.TCPSite(self._runner, self.host, 0).start())
            self.url = f"http://{self.host}:{self._runner.addresses[0][1]}"
        except BaseException as error:  # reported to start(), which raises it in the caller's thread
            self._error = error
            self.server.generator.close()
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

    def start(self) -> "BackgroundEngine":
        self._thread = threading.Thread(target=self._run, name="local-engine-http", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.startup_timeout_s):
            raise TimeoutError(f"the local engine did not start within {self.startup_timeout_s:.0f}s")
        if self._error is not None:
            raise RuntimeError(f"the local engine failed to start: {self._error}") from self._error
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        thread.join(timeout_s)

    def __enter__(self) -> "BackgroundEngine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
