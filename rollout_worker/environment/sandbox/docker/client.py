"""Docker I/O shared by the Docker sandbox backend and the container graders: the client, long streams on their own
threads, archive streams as file objects, and safe extraction of archive members."""

from __future__ import annotations

import asyncio
import io
import tarfile
import threading
from typing import Any

from rollout_worker.environment.sandbox.errors import SandboxUnavailableError


def docker_client(timeout: float):
    """A client for the engine in the environment, or `SandboxUnavailableError` saying what is missing."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError as exc:
        raise SandboxUnavailableError("the docker backend needs the Docker SDK: pip install 'intercept-rl[docker]'") from exc
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
        return client
    except DockerException as exc:
        raise SandboxUnavailableError(
            f"no Docker engine reachable ({exc}); start one (scripts/docker_up.sh, or set DOCKER_HOST) or use "
            "--sandbox local"
        ) from exc


def in_own_thread(fn: Any) -> asyncio.Future:
    """Run a long blocking call (an exec's output stream) on its own daemon thread, not the loop's default executor:
    that pool has ~cpu+4 threads, and as many streaming agents would starve every other Docker call (kill, create)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if not future.done():
            future.set_exception(exc) if exc is not None else future.set_result(result)

    def run() -> None:
        try:
            result, exc = fn(), None
        except BaseException as error:  # handed to the awaiting side
            result, exc = None, error
        try:
            loop.call_soon_threadsafe(settle, result, exc)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    threading.Thread(target=run, name="irl-docker-stream", daemon=True).start()
    return future


def safe_tar_member(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's `data` filter, but a member it refuses (a link out of the tree, a device) is skipped, not fatal."""
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError:
        return None


class StreamReader(io.RawIOBase):
    """A file object over the chunks of a Docker archive stream (so exports stream instead of sitting in memory)."""

    def __init__(self, chunks: Any):
        self._chunks = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(target), len(self._buffer))
        target[:n], self._buffer = self._buffer[:n], self._buffer[n:]
        return n
