"""Test harness: an `InterceptionServer` on its own event-loop thread, driven from synchronous test code.

The product never needed it (the worker runs the gate on its own loop thread), so it lives with the tests; the
import-linter contract "Product code never imports tests/" keeps it out of the packages."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from intercept_common.loop_thread import LoopThread

from control_plane import GateConfig, InterceptionServer, RolloutHandle

T = TypeVar("T")


class BackgroundGate:
    """An `InterceptionServer` on a daemon thread with its own event loop (`intercept_common.loop_thread`).

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
        self._loop_thread = LoopThread("intercept-rl-gate", call_timeout_s)

    @property
    def server(self) -> InterceptionServer:
        if self._server is None:
            raise RuntimeError("the gate is not started")
        return self._server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def running(self) -> bool:
        """True from `start()` until `stop()` (the loop thread is alive)."""
        return self._loop_thread.running

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if not self._loop_thread.running:
            raise RuntimeError("the gate is not started")
        return self._loop_thread.loop

    def start(self, timeout: float | None = None) -> str:
        """Start the loop thread and the server; return the server URL."""
        if self._loop_thread.running:
            raise RuntimeError("the gate is already started")
        self._loop_thread.start()
        try:
            self._server = self.run(self._make_and_start(), timeout)
        except BaseException:
            self._loop_thread.stop(timeout)
            raise
        return self._server.url

    async def _make_and_start(self) -> InterceptionServer:
        server = InterceptionServer(**self._server_args)  # built on the loop: its queues and futures live there
        await server.start()
        return server

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the gate's loop and return its result; on timeout cancel it and raise `TimeoutError`."""
        if not self._loop_thread.running:
            coro.close()
            raise RuntimeError("the gate is not started")
        return self._loop_thread.run(coro, timeout)

    def open_rollout(self, rollout_id: str, timeout: float | None = None) -> RolloutHandle:
        return self.run(self.server.open_rollout(rollout_id), timeout)

    def close_rollout(self, rollout: RolloutHandle | str, timeout: float | None = None) -> None:
        """Close a rollout by handle or id; closing an unknown or already-closed id is a no-op."""
        handle = rollout if isinstance(rollout, RolloutHandle) else self.server.get_rollout(rollout)
        if handle is not None:
            self.run(handle.close(), timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the server (closing every rollout), then the loop and its thread. Safe to call twice."""
        if not self._loop_thread.running:
            return
        try:
            if self._server is not None:
                self.run(self._server.stop(), timeout)
        finally:
            self._loop_thread.stop(timeout)

    def __enter__(self) -> BackgroundGate:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
