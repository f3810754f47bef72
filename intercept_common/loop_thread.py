"""An asyncio event loop on a daemon thread, driven from synchronous code with bounded waits.

The gate and the local engine are asyncio servers; the trainer, the CLIs and tests are synchronous. This is the one
bridge between them: every call is handed to the loop with `run_coroutine_threadsafe` and waited for at most a
timeout, so a stuck server can never freeze its caller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """`start()` a loop on a daemon thread, `run(coro, timeout)` on it, `stop()` it (idempotent)."""

    def __init__(self, name: str, call_timeout_s: float = 30.0) -> None:
        self.name = name
        self.call_timeout_s = call_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError(f"{self.name}: the loop thread is not started")
        return self._loop

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: the loop thread is already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._serve, args=(loop,), name=self.name, daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and return its result; on timeout cancel it and raise `TimeoutError`."""
        loop = self.loop
        if self._thread is threading.current_thread():
            coro.close()
            raise RuntimeError(f"{self.name}: run() called from the loop's own thread; await instead")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        limit = self.call_timeout_s if timeout is None else timeout
        try:
            return future.result(limit)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"{self.name}: call did not finish within {limit} s") from None

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop and join its thread (bounded); closes the loop once the thread is gone."""
        loop, thread = self._loop, self._thread
        self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self.call_timeout_s if timeout is None else timeout)
        if not thread.is_alive():
            loop.close()
            self._loop = None
