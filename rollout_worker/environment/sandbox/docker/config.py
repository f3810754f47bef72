"""What a Docker sandbox is made of: its config, the container spec (mounts, limits, labels) and the inner command.

Split from the backend (backend.py) so the spec can be read and tested without the process handling.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intercept_common.errors import ConfigError
from intercept_common.install_paths import agent_runtime_paths, agents_venv
from rollout_worker.environment.sandbox.local.bwrap import INNER_INIT, sandbox_python
from rollout_worker.environment.sandbox.registry import process_start_time

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
    docker_timeout_s: float = field(default=120.0, metadata={"help": "Timeout of one Docker API call."})
    ready_timeout_s: float = field(default=30.0, metadata={"help": "Bound on the relay coming up in a new container."})
    remove_retry_s: float = field(default=60.0, metadata={"help": "How long destroy() retries removing the "
                                  "container while the engine is unreachable (e.g. restarting)."})
    reap_on_start: bool = field(default=True, metadata={"help": "Remove orphaned containers before the first create."})

    def __post_init__(self) -> None:
        uid = self.user.split(":")[0]
        if uid in ("0", "root", ""):
            raise ConfigError("DockerSandboxConfig.user must be a non-root uid:gid (kill() kills every process of it)")


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
