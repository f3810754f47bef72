"""Run an `EngineServer` on loopback in a background thread with its own event loop (tests, in-process use)."""

from __future__ import annotations

from aiohttp import web

from intercept_common.http_site import start_site
from intercept_common.loop_thread import LoopThread
from local_engine.server import EngineServer


class BackgroundEngine:
    """`with BackgroundEngine(server) as engine: engine.url` — serves until the block ends, on every path."""

    def __init__(self, server: EngineServer, host: str = "127.0.0.1", startup_timeout_s: float = 30.0):
        self.server = server
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self.url = ""
        self._loop_thread = LoopThread("local-engine-http", call_timeout_s=startup_timeout_s)
        self._runner: web.AppRunner | None = None

    async def _serve(self) -> str:
        self._runner, url = await start_site(self.server.app(), host=self.host, port=0)
        return url

    def start(self) -> "BackgroundEngine":
        self._loop_thread.start()
        try:
            self.url = self._loop_thread.run(self._serve(), self.startup_timeout_s)
        except BaseException as error:
            self.server.generator.close()
            self._loop_thread.stop()
            if isinstance(error, TimeoutError):
                raise TimeoutError(f"the local engine did not start within {self.startup_timeout_s:.0f}s") from None
            raise RuntimeError(f"the local engine failed to start: {error}") from error
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        if not self._loop_thread.running:
            return
        try:
            if self._runner is not None:  # runs on_shutdown: the generator thread stops, waiting requests fail
                self._loop_thread.run(self._runner.cleanup(), timeout_s)
        finally:
            self._runner = None
            self._loop_thread.stop(timeout_s)

    def __enter__(self) -> "BackgroundEngine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
