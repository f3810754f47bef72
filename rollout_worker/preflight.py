"""Checks before a run starts anything: the failures that would otherwise surface as every rollout ending
`infra_error` (Docker down, an agent not installed) or as a crash minutes in (no space for the output)."""

from __future__ import annotations

import errno
import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

from intercept_common.errors import UserError

from .types import Task

MIN_FREE_MB = 50
SYNTH_IMAGE_PREFIX = "intercept-rl-synth/"  # the tag prefix of task images built by `intercept-rl tasks synth`


class PreflightError(RuntimeError, UserError):
    """A one-line, user-fixable problem found before the run (its message names the remedy)."""


def check_sandbox(backend: str, timeout_s: float = 10.0) -> None:
    """`--sandbox docker` needs a reachable Docker engine (bubblewrap problems surface from its own backend)."""
    if backend != "docker":
        return
    from .environment.sandbox import SandboxUnavailableError
    from .environment.sandbox.docker.client import docker_client

    try:
        docker_client(timeout_s).close()
    except SandboxUnavailableError as error:
        raise PreflightError(" ".join(str(error).split())) from None


def check_images(backend: str, tasks: Sequence[Task], timeout_s: float = 10.0) -> None:
    """`--sandbox docker` starts every image task from its image, and no registry is used: an image that is not
    present would end each of its rollouts as infra_error, so name the missing ones before anything starts."""
    images = sorted({task.image for task in tasks if task.image})
    if backend != "docker" or not images:
        return
    from docker.errors import ImageNotFound

    from .environment.sandbox.docker.client import docker_client

    client = docker_client(timeout_s)
    try:
        missing = []
        for image in images:
            try:
                client.images.get(image)
            except ImageNotFound:
                missing.append(image)
    finally:
        client.close()
    if missing:
        remedy = ("build them with `intercept-rl tasks synth --images-only --out <the set's dir>`, or `make "
                  "synth-images` for the shipped set" if all(image.startswith(SYNTH_IMAGE_PREFIX) for image in missing)
                  else "build or load them first")
        raise PreflightError(f"{len(missing)} of the {len(images)} task images are not present here, e.g. "
                             f"{missing[0]!r} (no registry is used: {remedy})")


def check_agent(spec: str) -> None:
    """The agent's own install (mini-swe-agent's venv, pi's npm prefix) exists."""
    from .environment.agents import MiniSweAgentLauncher, PiLauncher, get_agent

    launcher = get_agent(spec)
    if isinstance(launcher, MiniSweAgentLauncher):
        binary = launcher.venv / "bin" / "mini"
    elif isinstance(launcher, PiLauncher):
        binary = launcher.prefix / "node_modules" / ".bin" / "pi"
    else:
        return
    if not binary.exists():
        raise PreflightError(f"agent {spec!r} is not installed ({binary} is missing): run `make setup` "
                             "(scripts/bootstrap.sh)")


def check_writable(directory: str | os.PathLike, what: str = "--output-dir", min_free_mb: int = MIN_FREE_MB) -> None:
    """`directory` can be created and written, with at least `min_free_mb` free."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".intercept-rl-write-probe-{os.getpid()}"
        with probe.open("wb") as handle:
            handle.write(b"\0" * 65536)
            handle.flush()
            os.fsync(handle.fileno())
        probe.unlink()
    except OSError as error:
        remedy = "free some space or" if error.errno == 28 else ""
        raise PreflightError(f"cannot write to {path} ({error.strerror}): {remedy} choose another {what}".replace(
            ":  choose", ": choose")) from None
    free_mb = shutil.disk_usage(path).free / 2**20
    if free_mb < min_free_mb:
        raise PreflightError(f"only {free_mb:.0f} MB free on the filesystem of {path} (need {min_free_mb} MB): free "
                             f"some space or choose another {what}")


def check_port_free(host: str, port: int, option: str) -> None:
    """A fixed listening port is free now (0 = any free port: nothing to check). The bind at start-up still reports
    a port taken in between; this only moves the common case before the slow imports and the engine start."""
    if not port:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                return  # not ours to judge here (an address not on this machine, ...): the real bind reports it
            raise PreflightError(f"the address is already in use ({host}:{port}): choose another port ({option}), "
                                 "or stop the process that holds it") from None
