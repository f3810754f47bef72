"""Runs `intercept-rl` commands in this process, one after another, and reports how each ended (no tests here).

`python -m tests.support.cli_probe CASES.json` reads a list of cases, each an argv list (`["rollouts", "--max-turns",
"0", ...]`) or `{"argv": [...], "env": {NAME: VALUE}}` (set for that case only), runs each through the real
dispatcher (`intercept_rl_cli.main`), and prints one JSON list: per case its exit code, its stderr, whether an
exception escaped the dispatcher (a traceback), and what it left running: child processes of this process and
threads (an engine, a sandbox, a gate). One process for many cases: the imports are paid once.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

CASE_LIMIT_S = 120


def child_pids() -> list[int]:
    """Live (non-zombie) processes whose parent is this process, from /proc."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == me and fields[0] != "Z":
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def _environment(env: dict[str, str]):
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_case(case: list[str] | dict) -> dict:
    argv, env = (case["argv"], case.get("env", {})) if isinstance(case, dict) else (case, {})
    with _environment(env):
        return _run(argv)


def _run(argv: list[str]) -> dict:
    import intercept_rl_cli

    threads_before = {t.ident for t in threading.enumerate()}
    stderr, escaped, code = io.StringIO(), None, None
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        signal.alarm(CASE_LIMIT_S)  # a case its checks let through would serve or train: stop it, report it
        try:
            code = intercept_rl_cli.main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:  # what the dispatcher lets through prints as a traceback in the real command
            escaped = traceback.format_exc()
        finally:
            signal.alarm(0)
    children = child_pids()
    for pid in children:  # leave the next case a clean slate (these are ours: started by the case just run)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    new_threads = [t.name for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()]
    return {"argv": argv, "code": code, "stderr": stderr.getvalue(), "traceback": escaped, "children": children,
            "threads": new_threads}


class CaseTimeout(Exception):
    """A case still running after CASE_LIMIT_S: what it started was not refused."""


def _timeout(signum, frame):
    raise CaseTimeout(f"still running after {CASE_LIMIT_S} s")


def main() -> None:
    signal.signal(signal.SIGALRM, _timeout)
    cases = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps([run_case(argv) for argv in cases]))


if __name__ == "__main__":
    main()
