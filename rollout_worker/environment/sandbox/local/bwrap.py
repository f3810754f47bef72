"""bubblewrap plumbing shared by the local sandbox and the grading executor: the config, the `bwrap` argv,
and a sandboxed process with a bounded output tail that is killed as a whole (design §7).

Every command runs as `bwrap … -- <python> -I -S /run/intercept/init.py … -- argv`: a fresh pid and network
namespace per command, so killing the `bwrap` process tears down everything the command started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from intercept_common.install_paths import agent_runtime_paths
from rollout_worker.environment.sandbox.errors import SandboxUnavailableError
from rollout_worker.environment.sandbox.output_tail import OutputTail
from rollout_worker.types import ExecResult

INNER_INIT = Path(__file__).resolve().parent.parent / "inner_init.py"  # shared with the docker backend
INNER_INIT_PATH = "/run/intercept/init.py"
INNER_SOCKET_PATH = "/run/intercept/gate.sock"
# System pieces a Python/Node/git toolchain needs; never shadow, passwd hashes or host credentials.
_ETC_FILES = [
    "passwd", "group", "nsswitch.conf", "hosts", "localtime", "alternatives", "ld.so.cache", "ld.so.conf",
    "ld.so.conf.d", "ssl", "ca-certificates", "mime.types", "gitconfig",
]


@dataclass
class LocalSandboxConfig:
    """Settings of the bubblewrap (`local`) sandbox backend."""

    state_dir: str | None = field(
        default=None, metadata={"help": "Run-state dir for sandbox dirs and records (default <tmp>/intercept-rl-<uid>)."}
    )
    bwrap_path: str = field(default="bwrap", metadata={"help": "The bubblewrap binary."})
    workdir: str = field(default="/testbed", metadata={"help": "Where the task repository appears inside."})
    home: str = field(default="/home/agent", metadata={"help": "The agent's writable, persistent home inside."})
    relay_port: int = field(default=8080, metadata={"help": "Inner 127.0.0.1 port relayed to the rollout endpoint."})
    sandbox_uid: int | None = field(
        default=65534, metadata={"help": "uid/gid inside (own user namespace); None keeps the caller's identity."}
    )
    ro_paths: list[str] = field(
        default_factory=agent_runtime_paths,
        metadata={"help": "Extra host paths bound read-only at the same path (default: the agents' installs)."},
    )
    path_prefix: list[str] = field(
        default_factory=lambda: [p + "/bin" for p in agent_runtime_paths() if p.endswith("venv-agents")],
        metadata={"help": "Directories put first on PATH inside (default: the agents' venv, which has pytest)."},
    )
    address_space_bytes: int | None = field(
        default=None, metadata={"help": "RLIMIT_AS per process. Off by default: Node reserves large virtual ranges."}
    )
    max_processes: int | None = field(default=2048, metadata={"help": "RLIMIT_NPROC (where the kernel applies it)."})
    max_file_size_bytes: int | None = field(default=2 << 30, metadata={"help": "RLIMIT_FSIZE per written file."})
    max_open_files: int | None = field(default=4096, metadata={"help": "RLIMIT_NOFILE."})
    kill_timeout_s: float = field(default=10.0, metadata={"help": "Bound on waiting for a killed process to go."})
    upstream_timeout_s: float = field(default=1800.0, metadata={"help": "Bound on one proxied gate request."})
    probe_on_create: bool = field(
        default=True, metadata={"help": "Run `true` in each new sandbox so namespace failures surface at create."}
    )

    def rlimit_args(self) -> list[str]:
        limits = {"as": self.address_space_bytes, "nproc": self.max_processes, "fsize": self.max_file_size_bytes,
                  "nofile": self.max_open_files, "core": 0}
        return [arg for name, value in limits.items() if value is not None for arg in ("--rlimit", f"{name}={value}")]


def sandbox_python() -> str:
    """The interpreter that runs inside: the host's base Python, bound read-only at its own prefix."""
    candidate = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return str(candidate if candidate.exists() else Path(sys.executable).resolve())


def resolve_bwrap(config: LocalSandboxConfig) -> str:
    path = shutil.which(config.bwrap_path)
    if path is None:
        raise SandboxUnavailableError(
            f"bubblewrap ({config.bwrap_path!r}) not found: install it (`apt-get install bubblewrap`, done by "
            "scripts/bootstrap.sh) or use --sandbox docker"
        )
    return path


def build_bwrap_argv(
    config: LocalSandboxConfig,
    bwrap: str,
    command: list[str],
    *,
    writable_binds: list[tuple[str, str]],
    chdir: str,
    relay_socket: str | None = None,
) -> list[str]:
    """The full argv: isolation flags, read-only system, `writable_binds` (host, inside), then the command
    wrapped by inner_init (limits, optional relay from 127.0.0.1:relay_port to the bound `relay_socket`)."""
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox"]
    if config.sandbox_uid is not None:
        argv += ["--unshare-user", "--uid", str(config.sandbox_uid), "--gid", str(config.sandbox_uid)]
    argv += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for name in _ETC_FILES:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    # The private /tmp and /run come before the read-only runtimes: a checkout under /tmp (CI clones often live
    # there) must stay visible, and a later tmpfs would hide its venvs.
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run"]
    seen = {"/usr"}
    for path in [sys.base_prefix, *config.ro_paths]:
        if path not in seen and not any(path.startswith(s + "/") for s in seen):
            argv += ["--ro-bind-try", path, path]
            seen.add(path)
    argv += ["--ro-bind", str(INNER_INIT), INNER_INIT_PATH]
    for host, inside in writable_binds:
        argv += ["--bind", host, inside]
    inner = [sandbox_python(), "-I", "-S", INNER_INIT_PATH, *config.rlimit_args()]
    if relay_socket is not None:
        argv += ["--bind", relay_socket, INNER_SOCKET_PATH]
        inner += ["--relay-port", str(config.relay_port), "--relay-socket", INNER_SOCKET_PATH]
    return [*argv, "--chdir", chdir, "--", *inner, "--", *command]


def sandbox_env(config: LocalSandboxConfig, home: str, extra: dict[str, str] | None) -> dict[str, str]:
    """The whole environment of a sandboxed command: built from nothing, so no host variable (or secret) leaks.

    Passed to `bwrap` as its process environment rather than `--setenv` flags so that values such as the rollout
    key never appear on a command line (/proc/<pid>/cmdline is world-readable)."""
    path = ":".join([*config.path_prefix, "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    env = {"PATH": path, "HOME": home, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TERM": "dumb", "TMPDIR": "/tmp",
           "USER": "agent", "PYTHONUNBUFFERED": "1"}
    env.update(extra or {})
    return env


async def _drain(stream: asyncio.StreamReader | None, tail: OutputTail) -> None:
    if stream is None:
        return
    while data := await stream.read(65536):
        tail.add(data)


class BwrapProcess:
    """A `bwrap` process (implements `SandboxProcess`). stdin is /dev/null; output is kept as a bounded tail."""

    def __init__(self, proc: asyncio.subprocess.Process, output_limit: int, merge_stderr: bool, kill_timeout_s: float):
        self._proc = proc
        self._kill_timeout_s = kill_timeout_s
        self.stdout_tail = OutputTail(output_limit)
        self.stderr_tail = self.stdout_tail if merge_stderr else OutputTail(output_limit)
        self._readers = [asyncio.ensure_future(_drain(proc.stdout, self.stdout_tail))]
        if not merge_stderr:
            self._readers.append(asyncio.ensure_future(_drain(proc.stderr, self.stderr_tail)))

    @classmethod
    async def spawn(
        cls, argv: list[str], env: dict[str, str], output_limit: int, merge_stderr: bool, kill_timeout_s: float
    ) -> BwrapProcess:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: one killpg reaches bwrap and its monitor
        )
        return cls(proc, output_limit, merge_stderr, kill_timeout_s)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def wait(self, timeout: float | None = None) -> int | None:
        try:
            await asyncio.wait_for(asyncio.shield(self._proc.wait()), timeout)
        except TimeoutError:
            return None
        await self._finish_readers()
        return self._proc.returncode

    async def kill(self) -> None:
        if self._proc.returncode is None:
            # bwrap's --die-with-parent and the pid namespace take down everything inside once bwrap is gone.
            # killpg, not Popen.kill(): the latter polls first and would reap the pid behind asyncio's child
            # watcher's back, which then reports exit status 255 instead of the real one.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._proc.wait()), self._kill_timeout_s)
        await self._finish_readers()

    async def _finish_readers(self) -> None:
        # The pipes close once the namespace is gone; never wait on them unboundedly.
        done, pending = await asyncio.wait(self._readers, timeout=self._kill_timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    def output_tail(self) -> str:
        return self.stdout_tail.text()

    async def result(self, timeout: float) -> ExecResult:
        """Wait up to `timeout` seconds, killing on expiry, and return the outcome."""
        code = await self.wait(timeout)
        timed_out = code is None
        if timed_out:
            await self.kill()
        return ExecResult(
            exit_code=self._proc.returncode if self._proc.returncode is not None else -signal.SIGKILL,
            stdout=self.stdout_tail.text(),
            stderr=self.stderr_tail.text() if self.stderr_tail is not self.stdout_tail else "",
            timed_out=timed_out,
        )


class LocalSandboxTestExecutor:
    """Runs grading commands in a fresh bubblewrap sandbox: no network, read-only system, only `repo_dir` writable
    (bound at `config.workdir`), a throwaway home. Implements `TestExecutor`."""

    __test__ = False

    def __init__(self, config: LocalSandboxConfig | None = None, output_limit: int = 1 << 20):
        config = config or LocalSandboxConfig()
        # The grader's default runner is `<this python> -m pytest`: expose this interpreter's venv (read-only).
        if sys.prefix not in config.ro_paths:
            config = replace(config, ro_paths=[*config.ro_paths, sys.prefix])
        self.config = config
        self.output_limit = output_limit

    async def run(self, repo_dir: Path, argv: list[str], timeout: float) -> ExecResult:
        repo_dir = Path(repo_dir).resolve()
        if not repo_dir.is_dir():
            raise FileNotFoundError(f"repo_dir {repo_dir} is not a directory")
        bwrap = resolve_bwrap(self.config)
        full = build_bwrap_argv(
            self.config, bwrap, argv, writable_binds=[(str(repo_dir), self.config.workdir)], chdir=self.config.workdir
        )
        env = sandbox_env(self.config, "/tmp", None)
        proc = await BwrapProcess.spawn(full, env, self.output_limit, False, self.config.kill_timeout_s)
        try:
            return await proc.result(timeout)
        finally:
            await proc.kill()  # also on cancellation
