"""Run an `InterceptionServer` on its own event-loop thread and drive it from synchronous code (the trainer's)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from .config import GateConfig
from .rollout import RolloutHandle
from .server import InterceptionServer

T = TypeVar("T")


class BackgroundGate:
    """An `InterceptionServer` on a daemon thread with its own event loop.

    Every method is thread-safe and bounded: work is handed to the loop with `asyncio.run_coroutine_threadsafe` and
    waited for at most `timeout` seconds (default `call_timeout_s`). Objects the server hands out (`RolloutHandle`,
    `InterceptedRequest`) belong to that loop: call their coroutines through `run()`, e.g.
    `gate.run(rollout.next_request(timeout=5), timeout=10)`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, config: GateConfig | None = None,
                 served_model_name: str = "policy", *, secret: bytes | None = None,
                 call_timeout_s: float = 30.0) -> None:
        self._server_args = dict(host=host, port=port, config=config, served_model_name=served_model_name,
                                 secret=secret)
        self.call_timeout_s = call_timeout_s
        self._server: InterceptionServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def server(self) -> InterceptionServer:
        if self._server is None:
            raise RuntimeError("the gate is not started")
        return self._server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the gate is not started")
        return self._loop

    def start(self, timeout: float | None = None) -> str:
        """Start the loop thread and the server; return the server URL."""
        if self._thread is not None:
            raise RuntimeError("the gate is already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run_loop, args=(loop,), name="intercept-rl-gate", daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            self._server = self.run(self._make_and_start(), timeout)
        except BaseException:
            self._shutdown_loop(timeout)
            raise
        return self._server.url

    async def _make_and_start(self) -> InterceptionServer:
        server = InterceptionServer(**self._server_args)  # built on the loop: its queues and futures live there
        await server.start()
        return server

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the gate's loop and return its result; on timeout cancel it and raise `TimeoutError`."""
        loop = self.loop
        if self._thread is threading.current_thread():
            coro.close()
            raise RuntimeError("BackgroundGate.run() called from the gate's own loop thread; await instead")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        limit = self.call_timeout_s if timeout is None else timeout
        try:
            return future.result(limit)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"gate call did not finish within {limit} s") from None

    def open_rollout(self, rollout_id: str, timeout: float | None = None) -> RolloutHandle:
        return self.run(self.server.open_rollout(rollout_id), timeout)

    def close_rollout(self, rollout: RolloutHandle | str, timeout: float | None = None) -> None:
        """Close a rollout by handle or id; closing an unknown or already-closed id is a no-op."""
        handle = rollout if isinstance(rollout, RolloutHandle) else self.server.get_rollout(rollout)
        if handle is not None:
            self.run(handle.close(), timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the server (closing every rollout), then the loop and its thread. Safe to call twice."""
        if self._thread is None:
            return
        try:
            if self._server is not None:
                self.run(self._server.stop(), timeout)
        finally:
            self._shutdown_loop(timeout)

    def _shutdown_loop(self, timeout: float | None) -> None:
        loop, thread = self._loop, self._thread
        self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self.call_timeout_s if timeout is None else timeout)
        if not thread.is_alive():
            loop.close()
            self._loop = None

    def __enter__(self) -> BackgroundGate:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
