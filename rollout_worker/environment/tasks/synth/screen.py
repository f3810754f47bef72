"""Running a package's test suite in a container of its environment image (issue #24): the baseline twice (the
reliably passing set is what passed both times), then each mutant: its files written over the originals, the suite
run, the originals written back. One long-lived, network-less, labelled container per package; every run has a
timeout; outcomes are read by the `swebench` package's pytest parser, the one that grades the tasks."""

from __future__ import annotations

import asyncio
import io
import re
import shlex
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollout_worker.environment.grading.container_common import (
    GradingInfraError,
    exec_output,
    isolated_spec,
    remove_quietly,
    start_container,
)
from rollout_worker.environment.tasks.synth.manifest import PackageSpec

WORKDIR = "/testbed"
PYTEST_FLAGS = "--no-header -rA --tb=no -p no:cacheprovider"


def test_command(spec: PackageSpec) -> str:
    """The command that runs the package's suite: the same in screening and in the rows (`test_cmd`)."""
    return " ".join(["python -m pytest", PYTEST_FLAGS, *(shlex.quote(a) for a in spec.pytest_args),
                     *(shlex.quote(t) for t in spec.tests)])


test_command.__test__ = False  # type: ignore[attr-defined]


@dataclass
class RunResult:
    status: dict[str, str]  # test id -> PASSED / FAILED / ERROR / SKIPPED / XFAIL
    messages: dict[str, str]  # test id -> the one-line failure message pytest printed
    exit_code: int | None
    seconds: float
    timed_out: bool = False

    def failing(self, among: set[str]) -> set[str]:
        return {t for t in among if self.status.get(t) != "PASSED"}


def parse(log: str) -> tuple[dict[str, str], dict[str, str]]:
    from swebench.harness.log_parsers.python import parse_log_pytest

    status = parse_log_pytest(log, None)
    messages = {}
    for line in log.splitlines():
        m = re.match(r"^(FAILED|ERROR) (\S+) - (.*)$", line)
        if m:
            messages[m.group(2)] = m.group(3).strip()
    return status, messages


def _tar(files: dict[str, bytes], root: str) -> bytes:
    buffer = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, now
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class SuiteRunner:
    """A container of the environment image holding the package's original tree at /testbed."""

    def __init__(self, client: Any, env_image: str, spec: PackageSpec, tree: Path, run_timeout_s: float = 300.0):
        self.client, self.env_image, self.spec, self.tree = client, env_image, spec, tree
        self.run_timeout_s = run_timeout_s
        self.container: Any = None

    async def __aenter__(self) -> SuiteRunner:
        spec = isolated_spec(self.env_image, "synth-screen", mem_limit="4g", pids_limit=1024)
        self.container = await start_container(self.client, spec, "screening")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(self.tree, arcname="testbed")
        await asyncio.to_thread(self.container.put_archive, "/", buffer.getvalue())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.container is not None:
            await remove_quietly(self.container, "screening")
            self.container = None

    async def write(self, files: dict[str, bytes]) -> None:
        if not await asyncio.to_thread(self.container.put_archive, "/", _tar(files, WORKDIR.strip("/"))):
            raise GradingInfraError("writing files into the screening container failed")

    async def run(self, timeout_s: float | None = None) -> RunResult:
        limit = int(timeout_s or self.run_timeout_s)
        started = time.monotonic()
        cmd = f"cd {WORKDIR} && timeout -k 5 {limit} {test_command(self.spec)}"
        log, code = await exec_output(self.client, self.container.id, ["bash", "-c", cmd], limit + 60, "test run",
                                      # a wide terminal: pytest cuts each summary line's message to its width
                                      environment={"PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "400"})
        status, messages = parse(log)
        return RunResult(status=status, messages=messages, exit_code=code,
                         seconds=round(time.monotonic() - started, 2), timed_out=code in (124, 137))

    async def run_with(self, files: dict[str, bytes], originals: dict[str, bytes],
                       timeout_s: float | None = None) -> RunResult:
        """The suite with `files` written over the tree, the originals written back afterwards on every path."""
        await self.write(files)
        try:
            return await self.run(timeout_s)
        finally:
            await self.write(originals)


def reliable_set(first: RunResult, second: RunResult) -> set[str]:
    """Tests that passed in both baseline runs; ids with whitespace (which the harness's parser truncates) left out."""
    return {t for t, s in first.status.items()
            if s == "PASSED" and second.status.get(t) == "PASSED" and not any(c.isspace() for c in t)}
