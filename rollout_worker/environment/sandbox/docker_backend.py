"""The `docker` sandbox backend (optional extra: `pip install 'intercept-rl[docker]'`).

One container per rollout from the task's image (`task.image`, else `DockerSandboxConfig.image`), started with
`network_mode="none"`; the agent reaches its rollout the same way as in the local backend (DESIGN §7): the host's
`GateProxy` listens on a unix socket in a directory bind-mounted into the container, and `inner_init.py` (bound
read-only, run by the image's `python3`) relays 127.0.0.1:<relay_port> to it. The image therefore needs
`python3`; the repository is either already in the image at `workdir` or copied in from `task.repo_dir`.

Use: `intercept-rl rollouts --sandbox docker …` on a host with a Docker engine (DOCKER_HOST is honoured). The
container's main process is `sleep infinity` as root; every command runs as `user` through `docker exec`, so
`kill()` can end all of them (`kill -KILL -1` as that user) without stopping the container.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import secrets
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from rollout_worker.environment.sandbox.base import SandboxError, SandboxUnavailableError
from rollout_worker.environment.sandbox.bwrap import INNER_INIT
from rollout_worker.environment.sandbox.local import inner_endpoint
from rollout_worker.environment.sandbox.output_tail import OutputTail
from rollout_worker.environment.sandbox.registry import SANDBOX_PREFIX, SandboxRecord, default_state_dir, remove_tree
from rollout_worker.environment.sandbox.relay import GateProxy
from rollout_worker.types import ExecResult

if TYPE_CHECKING:
    from rollout_worker.types import RolloutEndpoint, Task

logger = logging.getLogger(__name__)

LABEL = "intercept-rl.sandbox"
RELAY_DIR_INSIDE = "/run/intercept-relay"
INIT_INSIDE = "/run/intercept-init.py"


@dataclass
class DockerSandboxConfig:
    """Settings of the Docker sandbox backend."""

    image: str | None = field(default=None, metadata={"help": "Image when the task names none."})
    workdir: str = field(default="/testbed", metadata={"help": "Repository path inside the container."})
    home: str = field(default="/home/agent", metadata={"help": "The agent's writable home inside."})
    user: str = field(default="65534:65534", metadata={"help": "uid:gid every command runs as."})
    python: str = field(default="python3", metadata={"help": "The image's Python, which runs inner_init.py."})
    relay_port: int = field(default=8080, metadata={"help": "Inner 127.0.0.1 port relayed to the rollout endpoint."})
    mem_limit: str | None = field(default="8g", metadata={"help": "Container memory limit."})
    pids_limit: int | None = field(default=2048, metadata={"help": "Container process limit."})
    nano_cpus: int | None = field(default=None, metadata={"help": "CPU quota in 1e-9 CPUs (None: unlimited)."})
    state_dir: str | None = field(default=None, metadata={"help": "Run-state dir (default as the local backend)."})
    upstream_timeout_s: float = field(default=1800.0, metadata={"help": "Bound on one proxied gate request."})
    engine_timeout_s: float = field(default=60.0, metadata={"help": "Timeout of Docker API calls."})


def container_spec(config: DockerSandboxConfig, image: str, relay_dir: Path, sandbox_id: str) -> dict[str, Any]:
    """Keyword arguments for `client.containers.run` (pure: tested without an engine)."""
    from docker.types import Mount

    spec: dict[str, Any] = dict(
        image=image,
        command=["sleep", "infinity"],
        detach=True,
        init=True,
        network_mode="none",
        working_dir=config.workdir,
        labels={LABEL: sandbox_id, "intercept-rl.owner-pid": str(os.getpid())},
        mounts=[
            Mount(target=RELAY_DIR_INSIDE, source=str(relay_dir), type="bind"),
            Mount(target=INIT_INSIDE, source=str(INNER_INIT), type="bind", read_only=True),
        ],
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        environment={},
    )
    for key in ("mem_limit", "pids_limit", "nano_cpus"):
        if getattr(config, key) is not None:
            spec[key] = getattr(config, key)
    return spec


def inner_command(config: DockerSandboxConfig, argv: list[str], relay: bool) -> list[str]:
    """The exec argv: inner_init (relay when the sandbox has an endpoint) wrapping `argv`."""
    cmd = [config.python, "-I", "-S", INIT_INSIDE, "--rlimit", "core=0"]
    if relay:
        cmd += ["--relay-port", str(config.relay_port), "--relay-socket", f"{RELAY_DIR_INSIDE}/gate.sock"]
    return [*cmd, "--", *argv]


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
            f"no Docker engine reachable ({exc}); start one (or set DOCKER_HOST) or use --sandbox local"
        ) from exc


class DockerProcess:
    """A command started with `docker exec` (implements `SandboxProcess`); output merged into a bounded tail."""

    def __init__(self, sandbox: DockerSandbox, exec_id: str, output_limit: int):
        self._sandbox = sandbox
        self._exec_id = exec_id
        self._tail = OutputTail(output_limit)
        self._returncode: int | None = None
        self._reader = asyncio.ensure_future(asyncio.to_thread(self._read))

    def _read(self) -> None:
        api = self._sandbox.client.api
        for chunk in api.exec_start(self._exec_id, stream=True):
            self._tail.add(chunk)
        self._returncode = api.exec_inspect(self._exec_id).get("ExitCode")

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
            await self.wait(self._sandbox.config.engine_timeout_s)
            if self._returncode is None:
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
        self.container: Any = None
        self._destroyed = False

    workdir = property(lambda self: self.config.workdir)
    home = property(lambda self: self.config.home)
    endpoint = property(lambda self: self._endpoint)

    async def _setup(self, task: Task) -> None:
        image = task.image or self.config.image
        if not image:
            raise SandboxError(f"task {task.instance_id} names no image and DockerSandboxConfig.image is unset")
        self.relay_dir.mkdir()
        if self._host_endpoint is not None:
            self._proxy = GateProxy(self.relay_dir / "gate.sock", self._host_endpoint.base_url,
                                    self._host_endpoint.rollout_id, self.config.upstream_timeout_s)
            await self._proxy.start()
        spec = container_spec(self.config, image, self.relay_dir, self._record.sandbox_id)
        self.container = await asyncio.to_thread(self.client.containers.run, **spec)
        self._record.extra["container_id"] = self.container.id
        self._record.save(self.root)
        if task.repo_dir:
            await asyncio.to_thread(self._put_tree, Path(task.repo_dir), self.config.workdir)
        await self._root_exec(["sh", "-c", f"mkdir -p {self.config.home} {self.config.workdir} && chown -R "
                               f"{self.config.user} {self.config.home} {self.config.workdir}"])

    def _put_tree(self, source: Path, dest: str) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(source, arcname=".")
        self.container.exec_run(["mkdir", "-p", dest], user="0")
        self.container.put_archive(dest, buffer.getvalue())

    async def _root_exec(self, argv: list[str]) -> None:
        code, out = await asyncio.to_thread(self.container.exec_run, argv, user="0")
        if code != 0:
            raise SandboxError(f"container setup failed ({code}): {out[-2000:]!r}")

    async def _exec_create(self, argv: list[str], env: dict[str, str] | None, cwd: str | None) -> str:
        if self._destroyed:
            raise SandboxError("sandbox is destroyed")
        environment = {"HOME": self.config.home, "LANG": "C.UTF-8", "TMPDIR": "/tmp"} | (env or {})
        created = await asyncio.to_thread(
            self.client.api.exec_create, self.container.id, inner_command(self.config, argv, self._proxy is not None),
            stdout=True, stderr=True, environment=environment, workdir=cwd or self.config.workdir,
            user=self.config.user,
        )
        return created["Id"]

    async def start(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None,
                    output_limit: int = 65536) -> DockerProcess:
        return DockerProcess(self, await self._exec_create(argv, env, cwd), output_limit)

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
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(inside.name)
            info.size, info.mode = len(data), mode
            info.uid, info.gid = (int(x) for x in self.config.user.split(":"))
            tar.addfile(info, io.BytesIO(data))
        await self._root_exec(["mkdir", "-p", str(inside.parent)])
        await asyncio.to_thread(self.container.put_archive, str(inside.parent), buffer.getvalue())

    async def host_repo_dir(self) -> Path:
        dest = self.root / "repo-export"
        remove_tree(dest)
        dest.mkdir()
        stream, _ = await asyncio.to_thread(self.container.get_archive, self.workdir + "/.")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            tar.extractall(dest, filter="data")  # the agent wrote this tree: no links out, no devices
        return dest

    async def kill(self) -> None:
        if self.container is not None and not self._destroyed:
            await asyncio.to_thread(self.container.exec_run, ["kill", "-KILL", "-1"], user=self.config.user)

    async def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        try:
            if self.container is not None:
                await asyncio.to_thread(self.container.remove, force=True)
        except Exception as exc:  # leave it to reap_docker_orphans rather than fail the episode
            logger.warning("removing container %s failed: %r", self.container.id, exc)
        finally:
            if self._proxy is not None:
                await self._proxy.close()
            await asyncio.to_thread(remove_tree, self.root)

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
        self.state_dir = Path(self.config.state_dir) if self.config.state_dir else default_state_dir()

    async def create(self, task: Task, rollout_id: str, endpoint: RolloutEndpoint | None = None) -> DockerSandbox:
        if self._client is None:
            self._client = await asyncio.to_thread(docker_client, self.config.engine_timeout_s)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        sandbox_id = SANDBOX_PREFIX + secrets.token_hex(6)
        root = self.state_dir / sandbox_id
        root.mkdir(mode=0o700)
        record = SandboxRecord.for_current_process(sandbox_id, rollout_id, self.name)
        sandbox = DockerSandbox(self._client, self.config, root, record, endpoint)
        try:
            record.save(root)
            await sandbox._setup(task)
        except BaseException as exc:
            await asyncio.shield(sandbox.destroy())
            if isinstance(exc, (SandboxError, asyncio.CancelledError)):
                raise
            raise SandboxError(f"creating a docker sandbox for {task.instance_id} failed: {exc!r}") from exc
        return sandbox


def reap_docker_orphans(client: Any) -> list[str]:
    """Remove containers of this project whose owning process is gone (the dirs go with `reap_orphans`)."""
    from rollout_worker.environment.sandbox.registry import is_alive

    removed = []
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        owner = int(container.labels.get("intercept-rl.owner-pid", "0") or 0)
        if owner and is_alive(owner, None):
            continue
        container.remove(force=True)
        removed.append(container.labels.get(LABEL, container.id))
    return removed
