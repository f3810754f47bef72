"""Helpers shared by the sandbox, agent, episode and reliability tests (no tests here; their fixtures are in
tests/conftest.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import textwrap
import time
from pathlib import Path

from rollout_worker.types import Task

BUGGY = "def add(a, b):\n    return a - b\n"
FIXED = "def add(a, b):\n    return a + b\n"
TEST = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\ndef test_zero():\n    assert add(0, 0) == 0\n"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e",
           "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True, text=True).stdout


def make_task(root: Path, instance_id: str = "calc-1") -> Task:
    """A one-file repo with a real bug, its test and the gold patch, committed as the base."""
    repo = root / f"repo-{instance_id}"
    repo.mkdir(parents=True)
    (repo / "calc.py").write_text(BUGGY)
    (repo / "tests").mkdir()
    (repo / "tests" / "test_calc.py").write_text(TEST)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    base = git(repo, "rev-parse", "HEAD").strip()
    (repo / "calc.py").write_text(FIXED)
    patch = git(repo, "diff")
    git(repo, "checkout", "-q", "--", "calc.py")
    return Task(instance_id=instance_id, repo="example/calc", base_commit=base,
                problem_statement="add() subtracts instead of adding. Fix calc.py.", patch=patch,
                FAIL_TO_PASS=["tests/test_calc.py::test_add"], PASS_TO_PASS=["tests/test_calc.py::test_zero"],
                repo_dir=str(repo))


def pids_with(marker: str) -> list[int]:
    """Host pids whose command line contains `marker`."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry))
    return found


def processes_with_marker(marker: str) -> set[int]:
    """Processes whose environment carries `marker`: everything a command started inherits it (the engine, bwrap),
    unlike a parent pid, which orphans lose."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def run_to_end(argv: list[str], *, cwd, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run a command in its own session, stdout and stderr merged; on a timeout (or any failure to wait) its whole
    process group is killed. Returns (exit code, output)."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)
    return proc.returncode, output


def pids_running(*argv: str) -> list[int]:
    """Host pids whose command line is exactly `argv`."""
    wanted = b"\0".join(a.encode() for a in argv) + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/cmdline").read_bytes() == wanted:
                    found.append(int(entry))
            except OSError:
                pass
    return found


async def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()


def sandbox_dirs(state_dir: Path) -> list[str]:
    return sorted(p.name for p in state_dir.glob("sb-*"))


PROBE = textwrap.dedent('''
    import json, os, socket, sys, urllib.request, urllib.error
    def get(url, key=None):
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except Exception as e:
            return type(e).__name__
    def connect(host, port):
        try:
            socket.create_connection((host, port), timeout=5).close()
            return "connected"
        except Exception as e:
            return type(e).__name__
    print(json.dumps({name: eval(expr) for name, expr in json.loads(sys.argv[1]).items()}))
''')
