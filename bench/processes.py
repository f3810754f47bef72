"""Benchmark processes: each part of a benchmark (engine stand-in, gate, agent clients) runs in its own process, so
that the gate's cost is measured on its own and the client SDKs' CPU is not booked to it.

`Child` starts a `spawn` process whose target speaks a tiny request/answer protocol over a `multiprocessing.Pipe`;
every wait is bounded and `close()` always ends the process (stop → terminate → kill). `serve_commands` is the
child's side: an asyncio loop answering commands while its servers keep running.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

_SPAWN = mp.get_context("spawn")  # fork after tokenizers/torch started threads is unsafe; spawn is always clean


class ChildFailed(RuntimeError):
    """The child process raised; the message carries its traceback."""


def _entry(target: Callable[..., Any], conn, args: tuple) -> None:
    try:
        target(conn, *args)
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        try:
            conn.send(("error", traceback.format_exc()))
        except (BrokenPipeError, OSError):
            pass


class Child:
    """One benchmark process. `request(command, *args)` returns the child's answer or raises `ChildFailed`."""

    def __init__(self, name: str, target: Callable[..., Any], *args: Any, start_timeout_s: float = 180.0):
        self.name = name
        self._conn, child_conn = _SPAWN.Pipe()
        self.process = _SPAWN.Process(target=_entry, args=(target, child_conn, args), name=name, daemon=True)
        self.process.start()
        child_conn.close()
        try:
            self.info = self._receive(start_timeout_s)
        except BaseException:
            self.close()
            raise

    def request(self, command: str, *args: Any, timeout_s: float = 180.0) -> Any:
        self._conn.send((command, args))
        return self._receive(timeout_s)

    def _receive(self, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while not self._conn.poll(0.2):
            if not self.process.is_alive():
                raise ChildFailed(f"{self.name} exited with code {self.process.exitcode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not answer within {timeout_s:.0f} s")
        try:
            status, value = self._conn.recv()
        except EOFError:
            raise ChildFailed(f"{self.name} closed its pipe (exit code {self.process.exitcode})") from None
        if status == "error":
            raise ChildFailed(f"{self.name} failed:\n{value}")
        return value

    def close(self, timeout_s: float = 30.0) -> None:
        """Ask the child to stop, then terminate and kill it if it does not; always reaps it."""
        if self.process.is_alive():
            try:
                self._conn.send(("stop", ()))
            except (BrokenPipeError, OSError):
                pass
            self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self._conn.close()

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


async def serve_commands(conn, handlers: dict[str, Callable[..., Awaitable[Any]]]) -> None:
    """Answer `(command, args)` requests with `handlers[command](*args)` until "stop" or the parent goes away."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            command, args = await loop.run_in_executor(None, conn.recv)  # an idle thread, not a poll
        except (EOFError, OSError):
            return
        if command == "stop":
            conn.send(("ok", None))
            return
        try:
            value = await handlers[command](*args)
        except Exception:  # noqa: BLE001 - the parent raises it with this traceback
            conn.send(("error", traceback.format_exc()))
        else:
            conn.send(("ok", value))


def process_snapshot() -> dict[str, float]:
    """CPU seconds (all threads of this process) and resident memory, read from the kernel."""
    with open(f"/proc/{os.getpid()}/statm") as handle:
        rss_pages = int(handle.read().split()[1])
    return {"cpu_s": time.process_time(), "rss_bytes": float(rss_pages * os.sysconf("SC_PAGE_SIZE")),
            "at": time.monotonic()}
