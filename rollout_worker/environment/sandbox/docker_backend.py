"""The `docker` sandbox backend (optional extra: `pip install 'intercept-rl[docker]'`; docs/containers.md).

One container per rollout from the task's image (`task.image`, else `DockerSandboxConfig.image`, the project's base
image built by scripts/docker_up.sh), started with `--network none`, no Docker socket, all capabilities dropped but
the three file ones its root setup needs, and the limits of the config (memory, CPUs, pids). The agent reaches its
rollout as in the bubblewrap backend (design §7): the host's `GateProxy` listens on a unix socket in a directory
bind-mounted into the container, and `inner_init.py`, run as the container's main process (as root, so the agent
user cannot kill it), relays 127.0.0.1:<relay_port> to that socket.

Agent runtimes without fetching anything: the host's agent installs (`.venv-agents`, `.agents/pi`), the Python
prefix they are built on and the host's `node` binary are bind-mounted read-only at the same paths (node at
/opt/intercept-rl/bin), and that bin dir plus the agents' venv bin are appended to the image's PATH (after the
image's own tools, so a task image's python/pytest win). They run with the image's dynamic loader and libraries:
the image's glibc must be at least the host's for the symbols these binaries use, and the image must carry the
shared libraries they load (libstdc++ for node; libssl/libffi/libsqlite… for the Python's extension modules). The
base image carries them; docs/containers.md lists them.

Every command runs through `docker exec` as the non-root `user`, wrapped by `inner_init.py` (rlimits); `kill()` ends
all of that user's processes (`kill -KILL -1` as that user) without stopping the container. Containers carry the
labels `intercept-rl.sandbox`, `intercept-rl.owner-pid` and `intercept-rl.owner-start`; `reap_docker_orphans`
removes those whose owning process is gone, and the backend runs it once before its first sandbox.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import secrets
import shutil
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from intercept_common.install_paths import agent_runtime_paths, agents_venv
from rollout_worker.environment.sandbox.base import SandboxError, SandboxUnavailableError
from rollout_worker.environment.sandbox.bwrap import INNER_INIT, sandbox_python
from rollout_worker.environment.sandbox.local import inner_endpoint
from rollout_worker.environment.sandbox.output_tail import OutputTail
from rollout_worker.environment.sandbox.registry import (
    SANDBOX_PREFIX,
    SandboxRecord,
    default_state_dir,
    is_alive,
    process_start_time,
    remove_tree,
)
from rollout_worker.environment.sandbox.relay import GateProxy
from rollout_worker.types import ExecResult

if TYPE_CHECKING:
    from rollout_worker.types import RolloutEndpoint, Task

logger = logging.getLogger(__name__)

LABEL = "intercept-rl.sandbox"
OWNER_PID_LABEL = "intercept-rl.owner-pid"
OWNER_START_LABEL = "intercept-rl.owner-start"
RELAY_DIR_INSIDE = "/run/intercept-relay"
INIT_INSIDE = "/run/intercept-init.py"
RUNTIME_BIN_INSIDE = "/opt/intercept-rl/bin"
DEFAULT_BASE_IMAGE = os.environ.get("INTERCEPT_RL_BASE_IMAGE", "intercept-rl/base:1")
_SYSTEM_PREFIXES = {"/", "/usr", "/usr/local", "/bin", "/lib", "/opt", "/etc", "/var", "/home", "/root", "/tmp"}
_IDLE = "import time\nwhile True: time.sleep(3600)"


def _agents_python_prefix() -> str | None:
    """The Python prefix the agents' venv is built on (its pyvenv.cfg `home` is `<prefix>/bin`)."""
    try:
        for line in (agents_venv() / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                return str(Path(value.strip()).parent)
    except OSError:
        return None
    return None


def default_runtime_paths() -> list[str]:
    """Host paths bound read-only at the same path: the agents' installs and the Python prefixes they and the relay
    run on (never a system prefix such as /usr: that would replace the image's own)."""
    paths = [*agent_runtime_paths(), sys.base_prefix]
    prefix = _agents_python_prefix()
    if prefix:
        paths.append(prefix)
    out: list[str] = []
    for path in paths:
        path = os.path.realpath(path)
        if path in _SYSTEM_PREFIXES or not os.path.exists(path) or path in out:
            continue
        out.append(path)
    return out


def default_python() -> str:
    """The interpreter that runs inner_init inside: the host's base Python when it is bound in, else the image's."""
    return sandbox_python() if os.path.realpath(sys.base_prefix) not in _SYSTEM_PREFIXES else "python3"


@dataclass
class DockerSandboxConfig:
    """Settings of the Docker sandbox backend."""

    image: str | None = field(default=DEFAULT_BASE_IMAGE, metadata={"help": "Image when the task names none "
                              "(default: the base image scripts/docker_up.sh builds; the repo is copied in)."})
    workdir: str = field(default="/testbed", metadata={"help": "Repository path inside (a task's `extra.workdir` "
                         "wins)."})
    home: str = field(default="/home/agent", metadata={"help": "The agent's writable home inside."})
    user: str = field(default="65534:65534", metadata={"help": "uid:gid every agent command runs as (non-root)."})
    python: str = field(default_factory=default_python, metadata={"help": "Python that runs inner_init.py inside."})
    runtime_paths: list[str] = field(default_factory=default_runtime_paths, metadata={
        "help": "Host paths bound read-only at the same path (agent installs, their Python prefix)."})
    node_binary: str | None = field(default_factory=lambda: shutil.which("node"), metadata={
        "help": "Host node binary bound at /opt/intercept-rl/bin/node (None: use the image's)."})
    relay_port: int = field(default=8080, metadata={"help": "Inner 127.0.0.1 port relayed to the rollout endpoint."})
    mem_limit: str | None = field(default="4g", metadata={"help": "Container memory limit (also the swap limit)."})
    pids_limit: int | None = field(default=1024, metadata={"help": "Container process limit."})
    cpus: float | None = field(default=1.0, metadata={"help": "CPUs the container may use (None: unlimited)."})
    state_dir: str | None = field(default=None, metadata={"help": "Run-state dir (default as the local backend)."})
    upstream_timeout_s: float = field(default=1800.0, metadata={"help": "Bound on one proxied gate request."})
    engine_timeout_s: float = field(default=120.0, metadata={"help": "Timeout of one Docker API call."})
    ready_timeout_s: float = field(default=30.0, metadata={"help": "Bound on the relay coming up in a new container."})
    remove_retry_s: float = field(default=60.0, metadata={"help": "How long destroy() retries removing the "
                                  "container while the engine is unreachable (e.g. restarting)."})
    reap_on_start: bool = field(default=True, metadata={"help": "Remove orphaned containers before the first create."})

    def __post_init__(self) -> None:
        uid = self.user.split(":")[0]
        if uid in ("0", "root", ""):
            raise ValueError("DockerSandboxConfig.user must be a non-root uid:gid (kill() kills every process of it)")


def container_spec(config: DockerSandboxConfig, image: str, relay_dir: Path, sandbox_id: str,
                   relay: bool = True, image_path: str | None = None) -> dict[str, Any]:
    """Keyword arguments for `client.containers.run` (pure: tested without an engine)."""
    from docker.types import Mount

    idle = [config.python, "-I", "-S", "-c", _IDLE]
    command = [config.python, "-I", "-S", INIT_INSIDE, "--rlimit", "core=0"]
    if relay:
        command += ["--relay-port", str(config.relay_port), "--relay-socket", f"{RELAY_DIR_INSIDE}/gate.sock"]
    mounts = [
        Mount(target=RELAY_DIR_INSIDE, source=str(relay_dir), type="bind"),
        Mount(target=INIT_INSIDE, source=str(INNER_INIT), type="bind", read_only=True),
    ]
    for path in config.runtime_paths:
        mounts.append(Mount(target=path, source=path, type="bind", read_only=True))
    extra_path = []
    if config.node_binary:
        mounts.append(Mount(target=f"{RUNTIME_BIN_INSIDE}/node", source=config.node_binary, type="bind",
                            read_only=True))
        extra_path.append(RUNTIME_BIN_INSIDE)
    venv_bin = str(agents_venv() / "bin")
    if any(venv_bin.startswith(p + "/") for p in config.runtime_paths):
        extra_path.append(venv_bin)
    path = ":".join([image_path or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *extra_path])
    spec: dict[str, Any] = dict(
        image=image,
        name=sandbox_id,  # so a container whose create was interrupted can still be found and removed
        command=[*command, "--", *idle],
        user="0:0",
        detach=True,
        init=True,
        network_mode="none",
        working_dir="/",
        hostname="sandbox",
        labels={LABEL: sandbox_id, OWNER_PID_LABEL: str(os.getpid()),
                OWNER_START_LABEL: str(process_start_time(os.getpid()) or "")},
        mounts=mounts,
        cap_drop=["ALL"],
        cap_add=["CHOWN", "DAC_OVERRIDE", "FOWNER"],  # root's setup only; the agent user has no capabilities
        security_opt=["no-new-privileges"],
        environment={"PATH": path, "LANG": "C.UTF-8"},
    )
    if config.mem_limit is not None:
        spec["mem_limit"] = config.mem_limit
        spec["memswap_limit"] = config.mem_limit
    if config.pids_limit is not None:
        spec["pids_limit"] = config.pids_limit
    if config.cpus is not None:
        spec["nano_cpus"] = int(config.cpus * 1e9)
    return spec


def inner_command(config: DockerSandboxConfig, argv: list[str]) -> list[str]:
    """The exec argv: inner_init (limits) wrapping `argv`."""
    return [config.python, "-I", "-S", INIT_INSIDE, "--rlimit", "core=0", "--", *argv]


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


_SETUP = r"""set -e
home=$1; workdir=$2; user=$3; owned=$4; shift 4
mkdir -p "$home" "$workdir"
chown "$user" "$home" "$workdir"
if [ "$owned" = chown ]; then chown -R "$user" "$workdir"; fi
for p in "$@"; do  # the runtimes' ancestors must be traversable by the agent user (e.g. /root)
  d=$(dirname "$p")
  while [ "$d" != / ]; do chmod o+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
done
"""

_READY = """import socket, sys, time
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close(); break
    except OSError:
        if time.monotonic() > deadline: sys.exit("relay not listening")
        time.sleep(0.05)
"""


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


class DockerProcess:
    """A command started with `docker exec` (implements `SandboxProcess`); output merged into a bounded tail."""

    def __init__(self, sandbox: DockerSandbox, exec_id: str, output_limit: int):
        self._sandbox = sandbox
        self._exec_id = exec_id
        self._tail = OutputTail(output_limit)
        self._returncode: int | None = None
        self._reader = in_own_thread(self._read)

    def _read(self) -> None:
        api = self._sandbox.client.api
        try:
            for chunk in api.exec_start(self._exec_id, stream=True):
                self._tail.add(chunk)
            code = api.exec_inspect(self._exec_id).get("ExitCode")
        except Exception as exc:  # the engine went away (restart) or the container was removed under us
            self._tail.add(f"\n[sandbox] lost the exec stream: {type(exc).__name__}\n".encode())
            code = None
        if code is None:
            code = -9
        elif self._sandbox.killed and 128 < code < 160:  # inner_init/docker report a signal death as 128+N
            code = 128 - code
        self._returncode = code

    @property
    def returncode(self) -> int | None:
        return self._returncode

    async def wait(self, timeout: float | None = None) -> int | None:
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        except TimeoutError:
            return None
        return self._returncode

    async def kill(self) -> None:
        # An exec cannot be signalled by id; the sandbox user's processes are killed together.
        if self._returncode is None:
            await self._sandbox.kill()
            if await self.wait(self._sandbox.config.engine_timeout_s) is None:
                self._returncode = -9

    def output_tail(self) -> str:
        return self._tail.text()


class DockerSandbox:
    """A container sandbox (implements `Sandbox`)."""

    def __init__(self, client: Any, config: DockerSandboxConfig, root: Path, record: SandboxRecord,
                 endpoint: RolloutEndpoint | None):
        self.client = client
        self.config = config
        self.root = root
        self.relay_dir = root / "relay"
        self._record = record
        self._host_endpoint = endpoint
        self._endpoint = inner_endpoint(endpoint, config.relay_port) if endpoint else None
        self._proxy: GateProxy | None = None
        self._workdir = config.workdir
        self.container: Any = None
        self._destroyed = False
        self._processes: list[DockerProcess] = []
        self._creating: asyncio.Future | None = None
        self.killed = False

    workdir = property(lambda self: self._workdir)
    home = property(lambda self: self.config.home)
    endpoint = property(lambda self: self._endpoint)
    sandbox_id = property(lambda self: self._record.sandbox_id)

    async def _setup(self, task: Task) -> None:
        image = task.image or self.config.image
        if not image:
            raise SandboxError(f"task {task.instance_id} names no image and DockerSandboxConfig.image is unset")
        if task.image and task.extra.get("workdir"):
            self._workdir = str(task.extra["workdir"])
        self.relay_dir.mkdir()
        if self._host_endpoint is not None:
            self._proxy = GateProxy(self.relay_dir / "gate.sock", self._host_endpoint.base_url,
                                    self._host_endpoint.rollout_id, self.config.upstream_timeout_s)
            await self._proxy.start()
        if "harbor_dir" in task.extra and image == task.image:  # a Harbor task's environment, built once locally
            from rollout_worker.environment.tasks.harbor import build_harbor_image

            await asyncio.to_thread(build_harbor_image, self.client, task)
        image_path = await asyncio.to_thread(self._image_path, image)
        spec = container_spec(self.config, image, self.relay_dir, self.sandbox_id, self._proxy is not None,
                              image_path)
        # Shielded and remembered: a cancelled create still lets destroy() wait for the engine's answer, then
        # remove the container by name even if the answer never came back.
        self._creating = asyncio.ensure_future(asyncio.to_thread(self.client.containers.run, **spec))
        self.container = await asyncio.shield(self._creating)
        self._record.extra["container_id"] = self.container.id
        self._record.save(self.root)
        copy = bool(task.repo_dir) and not task.image
        await self._root_exec(["sh", "-c", _SETUP, "setup", self.config.home, self._workdir, self.config.user,
                               "keep" if copy else "chown", *self.config.runtime_paths])
        if copy:
            await asyncio.to_thread(self._put_tree, Path(task.repo_dir), self._workdir)
        if self._proxy is not None:
            await self._root_exec([self.config.python, "-I", "-S", "-c", _READY, str(self.config.relay_port),
                                   str(self.config.ready_timeout_s)])

    def _image_path(self, image: str) -> str | None:
        from docker.errors import ImageNotFound

        try:
            env = self.client.images.get(image).attrs.get("Config", {}).get("Env") or []
        except ImageNotFound as exc:
            raise SandboxError(f"image {image!r} is not present (no registry is used: build or load it first)") from exc
        return next((e.partition("=")[2] for e in env if e.startswith("PATH=")), None)

    def _put_tree(self, source: Path, dest: str) -> None:
        uid, gid = (int(x) for x in self.config.user.split(":"))

        def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
            return info

        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(source, arcname=".", filter=owned)
        if not self.container.put_archive(dest, buffer.getvalue()):
            raise SandboxError(f"copying the repository into {dest} failed")

    async def _root_exec(self, argv: list[str]) -> None:
        code, out = await asyncio.to_thread(self.container.exec_run, argv, user="0")
        if code != 0:
            raise SandboxError(f"container setup failed ({code}): {out[-2000:]!r}")

    async def _exec_create(self, argv: list[str], env: dict[str, str] | None, cwd: str | None) -> str:
        if self._destroyed:
            raise SandboxError("sandbox is destroyed")
        if not argv:
            raise ValueError("argv must not be empty")
        environment = {"HOME": self.config.home, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp",
                       "TERM": "dumb", "USER": "agent", "PYTHONUNBUFFERED": "1"} | (env or {})
        created = await asyncio.to_thread(
            self.client.api.exec_create, self.container.id, inner_command(self.config, argv),
            stdout=True, stderr=True, environment=environment, workdir=cwd or self._workdir,
            user=self.config.user,
        )
        return created["Id"]

    async def start(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None,
                    output_limit: int = 65536) -> DockerProcess:
        process = DockerProcess(self, await self._exec_create(argv, env, cwd), output_limit)
        self._processes.append(process)
        return process

    async def exec(self, argv: list[str], timeout: float, env: dict[str, str] | None = None,
                   cwd: str | None = None) -> ExecResult:
        process = await self.start(argv, env, cwd, 1 << 20)
        code = await process.wait(timeout)
        if code is None:
            await process.kill()
        return ExecResult(process.returncode if process.returncode is not None else -9, process.output_tail(), "",
                          timed_out=code is None)

    def _checked(self, path: str) -> str:
        inside = PurePosixPath(path)
        if ".." in inside.parts or not any(inside.is_relative_to(r) for r in (self.workdir, self.home)):
            raise PermissionError(f"{path} is not under the sandbox's workdir or home")
        return str(inside)

    async def read_file(self, path: str) -> bytes:
        stream, _ = await asyncio.to_thread(self.container.get_archive, self._checked(path))
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.next()
            extracted = tar.extractfile(member) if member else None
            if extracted is None:
                raise IsADirectoryError(path)
            return extracted.read()

    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        inside = PurePosixPath(self._checked(path))
        uid, gid = (int(x) for x in self.config.user.split(":"))
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(inside.name)
            info.size, info.mode, info.uid, info.gid = len(data), mode, uid, gid
            tar.addfile(info, io.BytesIO(data))
        # The parents are made by the agent user, so they stay the agent's (inside its workdir or home).
        code, out = await asyncio.to_thread(self.container.exec_run, ["mkdir", "-p", str(inside.parent)],
                                            user=self.config.user)
        if code != 0:
            raise SandboxError(f"mkdir {inside.parent} failed: {out[-500:]!r}")
        await asyncio.to_thread(self.container.put_archive, str(inside.parent), buffer.getvalue())

    async def host_repo_dir(self) -> Path:
        dest = self.root / "repo-export"
        await asyncio.to_thread(remove_tree, dest)
        dest.mkdir()

        def export() -> None:
            stream, _ = self.container.get_archive(self.workdir + "/.")
            with tarfile.open(fileobj=_StreamReader(stream), mode="r|") as tar:
                tar.extractall(dest, filter=_safe_member)  # the agent wrote this tree: no links out, no devices

        await asyncio.to_thread(export)
        # get_archive names the top entry after the directory ("." → the dir's own name); unwrap it.
        entries = list(dest.iterdir())
        if len(entries) == 1 and entries[0].is_dir() and entries[0].name in (".", PurePosixPath(self.workdir).name):
            return entries[0]
        return dest

    async def kill(self) -> None:
        if self.container is None or self._destroyed:
            return
        self.killed = True
        try:
            await asyncio.to_thread(self.container.exec_run, ["/bin/sh", "-c", "kill -KILL -1"],
                                    user=self.config.user)
        except Exception as exc:  # the engine or the container is gone: nothing of the agent runs either
            logger.warning("killing the agent in %s failed: %r", self.sandbox_id, exc)
        await asyncio.gather(*(p.wait(self.config.engine_timeout_s) for p in self._processes))

    async def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        try:
            if self._creating is not None:
                await asyncio.wait([self._creating], timeout=self.config.engine_timeout_s)
            if self._creating is not None or self.container is not None:
                await self._remove_container()
        finally:
            for process in self._processes:  # their streams end with the container; never wait unboundedly
                await asyncio.wait([process._reader], timeout=10)
            if self._proxy is not None:
                await self._proxy.close()
            await asyncio.to_thread(remove_tree, self.root)

    async def _remove_container(self) -> None:
        """`docker rm -f`, retried while the engine is unreachable or busy (a dockerd restart takes seconds) up to
        `remove_retry_s`; after that the container is left to `reap_docker_orphans`."""
        deadline = time.monotonic() + self.config.remove_retry_s
        ref = self.container.id if self.container is not None else self.sandbox_id
        while True:
            try:
                await asyncio.to_thread(self.client.api.remove_container, ref, force=True)
                return
            except Exception as exc:
                if "No such container" in str(exc) or getattr(getattr(exc, "response", None), "status_code", 0) == 404:
                    return
                if time.monotonic() > deadline:
                    logger.warning("removing container %s failed: %r", ref, exc)
                    return
                await asyncio.sleep(0.5)

    async def __aenter__(self) -> DockerSandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.destroy()


def _safe_member(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's `data` filter, but a member it refuses (a link out of the tree, a device) is skipped, not fatal."""
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError:
        return None


class _StreamReader(io.RawIOBase):
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


class DockerSandboxBackend:
    """Creates container sandboxes (implements `SandboxBackend`). Fails fast without an engine."""

    name = "docker"

    def __init__(self, config: DockerSandboxConfig | None = None, client: Any = None):
        self.config = config or DockerSandboxConfig()
        self._client = client
        self._reaped = False
        self.state_dir = Path(self.config.state_dir) if self.config.state_dir else default_state_dir()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client(self.config.engine_timeout_s)
        return self._client

    async def create(self, task: Task, rollout_id: str, endpoint: RolloutEndpoint | None = None) -> DockerSandbox:
        client = await asyncio.to_thread(lambda: self.client)
        if self.config.reap_on_start and not self._reaped:
            self._reaped = True
            reaped = await asyncio.to_thread(reap_docker_orphans, client)
            if reaped:
                logger.warning("removed %d orphaned sandbox container(s): %s", len(reaped), ", ".join(reaped))
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        sandbox_id = SANDBOX_PREFIX + secrets.token_hex(6)
        root = self.state_dir / sandbox_id
        root.mkdir(mode=0o700)
        record = SandboxRecord.for_current_process(sandbox_id, rollout_id, self.name)
        sandbox = DockerSandbox(client, self.config, root, record, endpoint)
        started = time.monotonic()
        try:
            record.save(root)
            await sandbox._setup(task)
        except BaseException as exc:
            await asyncio.shield(sandbox.destroy())
            if isinstance(exc, (SandboxError, asyncio.CancelledError)):
                raise
            raise SandboxError(f"creating a docker sandbox for {task.instance_id} failed: {exc!r}") from exc
        logger.debug("docker sandbox %s ready in %.2fs", sandbox_id, time.monotonic() - started)
        return sandbox


def reap_docker_orphans(client: Any, *, include_live_owners: bool = False) -> list[str]:
    """Remove this project's containers whose owning process is gone (its pid and start time no longer match), or
    all of them with `include_live_owners`. The state dirs go with `registry.reap_orphans`."""
    removed = []
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        labels = container.labels or {}
        owner = int(labels.get(OWNER_PID_LABEL, "0") or 0)
        start = labels.get(OWNER_START_LABEL) or None
        if not include_live_owners and owner and is_alive(owner, int(start) if start else None):
            continue
        try:
            container.remove(force=True)
        except Exception as exc:
            if "No such container" not in str(exc):
                logger.warning("reaping container %s failed: %r", container.id, exc)
                continue
        removed.append(labels.get(LABEL, container.id))
    return removed
