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
import tarfile
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from rollout_worker.environment.sandbox.creation import new_sandbox_dir, set_up_or_destroy
from rollout_worker.environment.sandbox.docker.client import StreamReader, docker_client, in_own_thread, safe_tar_member
from rollout_worker.environment.sandbox.docker.config import (
    LABEL,
    OWNER_PID_LABEL,
    OWNER_START_LABEL,
    DockerSandboxConfig,
    container_spec,
    inner_command,
)
from rollout_worker.environment.sandbox.docker.history import history_free_image
from rollout_worker.environment.sandbox.errors import SandboxError
from rollout_worker.environment.sandbox.local.backend import inner_endpoint
from rollout_worker.environment.sandbox.output_tail import OutputTail
from rollout_worker.environment.sandbox.registry import (
    SandboxRecord,
    default_state_dir,
    is_alive,
    remove_tree,
)
from rollout_worker.environment.sandbox.relay import GateProxy
from rollout_worker.types import ExecResult

if TYPE_CHECKING:
    from rollout_worker.types import RolloutEndpoint, Task

logger = logging.getLogger(__name__)

# Bound on cleaning one image's git history (once per image; a Django-sized repository takes seconds: docs/containers.md).
HISTORY_SCRUB_TIMEOUT_S = 900.0

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
            if await self.wait(self._sandbox.config.docker_timeout_s) is None:
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
        if task.image and image == task.image:  # nothing of the future in its repository (history.py)
            image = await asyncio.to_thread(history_free_image, self.client, image, self._workdir,
                                            task.base_commit or "", HISTORY_SCRUB_TIMEOUT_S)
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
            with tarfile.open(fileobj=StreamReader(stream), mode="r|") as tar:
                tar.extractall(dest, filter=safe_tar_member)  # the agent wrote this tree: no links out, no devices

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
        await asyncio.gather(*(p.wait(self.config.docker_timeout_s) for p in self._processes))

    async def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        try:
            if self._creating is not None:
                await asyncio.wait([self._creating], timeout=self.config.docker_timeout_s)
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
            self._client = docker_client(self.config.docker_timeout_s)
        return self._client

    async def create(self, task: Task, rollout_id: str, endpoint: RolloutEndpoint | None = None) -> DockerSandbox:
        client = await asyncio.to_thread(lambda: self.client)
        if self.config.reap_on_start and not self._reaped:
            self._reaped = True
            reaped = await asyncio.to_thread(reap_docker_orphans, client)
            if reaped:
                logger.warning("removed %d orphaned sandbox container(s): %s", len(reaped), ", ".join(reaped))
        root, record = new_sandbox_dir(self.state_dir, rollout_id, self.name)
        sandbox = DockerSandbox(client, self.config, root, record, endpoint)
        started = time.monotonic()
        await set_up_or_destroy(sandbox, record, root, task, "docker")
        logger.debug("docker sandbox %s ready in %.2fs", record.sandbox_id, time.monotonic() - started)
        return sandbox


def reap_docker_orphans(client: Any, *, include_live_owners: bool = False) -> list[str]:
    """Remove this project's containers whose owning process is gone (its pid and start time no longer match), or
    all of them with `include_live_owners`. The state dirs go with `registry.reap_orphans`."""
    removed = []
    # ignore_removed: the listing fetches each container after listing ids; one that another process or rollout
    # removed in between is a 404 there (concurrent rollouts of one task failed their creation on it).
    for container in client.containers.list(all=True, filters={"label": LABEL}, ignore_removed=True):
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
