"""mini-swe-agent's own Docker mode, as seeds 1 and 2 run it: `mini` on the host, every command it runs through
`docker exec` into a container its `DockerEnvironment` starts (implements `EpisodeRunner`). Test-only: no command
selects it; tests/rollout_worker/environment/test_docker_mini_mode.py keeps the seeds' way of running mini measurable
(docs/containers.md §3), and no product module may import it (import-linter).

Isolation difference from `--sandbox docker` (docs/containers.md §3): here the agent process itself — litellm, its
config and trajectory files, the rollout key in its environment — runs on the host, with the host's network and file
system; only the commands it executes are contained. The container is still `--network none`, capability-less,
limited and labelled (named after the sandbox, so it is removed on every path and reaped after a crash), and mini
reaches the gate directly on the host endpoint. Commands run as root inside (mini's `docker exec` takes the image's
user); a task with a host `repo_dir` gets a private copy bind-mounted at the workdir, an image task keeps its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rollout_worker.environment.agents.mini_swe_agent import MiniSweAgentLauncher
from rollout_worker.environment.sandbox.docker.client import docker_client, safe_tar_member
from rollout_worker.environment.sandbox.docker.config import (
    DEFAULT_BASE_IMAGE,
    LABEL,
    OWNER_PID_LABEL,
    OWNER_START_LABEL,
)
from rollout_worker.environment.sandbox.output_tail import OutputTail
from rollout_worker.environment.sandbox.registry import (
    SANDBOX_PREFIX,
    SandboxRecord,
    default_state_dir,
    process_start_time,
    remove_tree,
)
from rollout_worker.outcomes import AgentEnd, EpisodeStatus
from rollout_worker.types import EpisodeResult, RolloutEndpoint, Task

logger = logging.getLogger(__name__)


@dataclass
class MiniDockerModeConfig:
    """Settings of mini-swe-agent's Docker mode."""

    image: str = field(default=DEFAULT_BASE_IMAGE, metadata={"help": "Image for tasks that name none."})
    workdir: str = field(default="/testbed", metadata={"help": "Repository path inside (a task's extra.workdir wins)."})
    mem_limit: str = field(default="4g", metadata={"help": "Container memory limit."})
    cpus: float = field(default=1.0, metadata={"help": "Container CPUs."})
    pids_limit: int = field(default=1024, metadata={"help": "Container process limit."})
    agent_wall_time_s: float = field(default=900.0, metadata={"help": "Agent wall-time budget."})
    output_tail_bytes: int = field(default=65536, metadata={"help": "How much of mini's output to keep."})
    state_dir: str | None = field(default=None, metadata={"help": "Run-state dir (default as the other backends)."})
    docker_executable: str = field(default_factory=lambda: shutil.which("docker") or "docker",
                                   metadata={"help": "The docker CLI mini drives."})
    kill_timeout_s: float = field(default=30.0, metadata={"help": "Bound on waiting for a killed mini to go."})


class _HostShim:
    """What `MiniSweAgentLauncher.prepare` reads from a sandbox: the home (a host dir) and the workdir (inside)."""

    def __init__(self, home: Path, workdir: str):
        self.home, self.workdir = str(home), workdir


class MiniSweAgentDockerModeRunner:
    """Runs mini on the host against a container it drives with `docker exec`, then grades (see module docstring)."""

    def __init__(self, grader: Any, config: MiniDockerModeConfig | None = None,
                 launcher: MiniSweAgentLauncher | None = None, client: Any = None):
        self.grader = grader
        self.config = config or MiniDockerModeConfig()
        self.launcher = launcher or MiniSweAgentLauncher()
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client(60)
        return self._client

    async def run(self, task: Task, endpoint: RolloutEndpoint, stop: asyncio.Event) -> EpisodeResult:
        cfg = self.config
        timings: dict[str, float] = {}
        state_dir = Path(cfg.state_dir) if cfg.state_dir else default_state_dir()
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        sandbox_id = SANDBOX_PREFIX + secrets.token_hex(6)
        root = state_dir / sandbox_id
        root.mkdir(mode=0o700)
        record = SandboxRecord.for_current_process(sandbox_id, endpoint.rollout_id, "mini-docker")
        record.extra["container_name"] = sandbox_id
        record.save(root)
        proc: asyncio.subprocess.Process | None = None
        try:
            started = time.monotonic()
            try:
                client = await asyncio.to_thread(lambda: self.client)
                workdir = str(task.extra.get("workdir") or cfg.workdir) if task.image else cfg.workdir
                image = task.image or cfg.image
                run_args = ["--network", "none", "--name", sandbox_id, "--label", f"{LABEL}={sandbox_id}",
                            "--label", f"{OWNER_PID_LABEL}={os.getpid()}",
                            "--label", f"{OWNER_START_LABEL}={process_start_time(os.getpid()) or ''}",
                            "--memory", cfg.mem_limit, "--memory-swap", cfg.mem_limit, "--cpus", str(cfg.cpus),
                            "--pids-limit", str(cfg.pids_limit), "--cap-drop", "ALL",
                            "--cap-add", "CHOWN", "--cap-add", "DAC_OVERRIDE", "--cap-add", "FOWNER",
                            "--security-opt", "no-new-privileges"]
                host_repo = None
                if task.repo_dir and not task.image:
                    host_repo = root / "repo"
                    await asyncio.to_thread(shutil.copytree, task.repo_dir, host_repo, symlinks=True)
                    run_args += ["-v", f"{host_repo}:{workdir}"]
                await asyncio.to_thread(client.images.get, image)  # fail fast: mini would try to pull it
                home = root / "home"
                home.mkdir()
                command = self.launcher.prepare(_HostShim(home, workdir), endpoint, task)
                for path, data in command.files.items():
                    if path.endswith(".yaml"):
                        config = yaml.safe_load(data)
                        config["environment"] = {"environment_class": "docker", "image": image, "cwd": workdir,
                                                 "timeout": self.launcher.command_timeout_s, "run_args": run_args,
                                                 "executable": cfg.docker_executable, "pull_timeout": 60}
                        data = yaml.safe_dump(config, sort_keys=False).encode()
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                    Path(path).write_bytes(data)
                env = {"PATH": os.pathsep.join([str(self.launcher.venv / "bin"), os.path.dirname(cfg.docker_executable),
                                                "/usr/local/bin", "/usr/bin", "/bin"]),
                       "HOME": str(home), "LANG": "C.UTF-8", "TMPDIR": str(home)} | command.env
                if os.environ.get("DOCKER_HOST"):
                    env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
                proc = await asyncio.create_subprocess_exec(
                    *command.argv, cwd=str(home), env=env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
                record.pids[str(proc.pid)] = process_start_time(proc.pid)
                record.save(root)
            except Exception as exc:
                logger.warning("mini docker mode: start failed: %r", exc)
                return EpisodeResult(EpisodeStatus.INFRA_ERROR, None, scorable=False,
                                     details={"reason": f"mini docker mode failed to start: {exc}"}, timings=timings)
            timings["sandbox_setup"] = time.monotonic() - started

            tail = OutputTail(cfg.output_tail_bytes)

            async def drain() -> None:
                assert proc is not None and proc.stdout is not None
                while data := await proc.stdout.read(65536):
                    tail.add(data)

            reader = asyncio.ensure_future(drain())
            exited = asyncio.ensure_future(proc.wait())
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({exited, stopped}, timeout=cfg.agent_wall_time_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
                ended = (AgentEnd.STOP if stop.is_set() else
                         AgentEnd.EXIT if proc.returncode is not None else AgentEnd.WALL_TIME)
                await self._kill(proc)
                await asyncio.wait({reader}, timeout=5)
                reader.cancel()
            timings["agent"] = time.monotonic() - started - timings["sandbox_setup"]
            await asyncio.to_thread(self._stop_container, sandbox_id)
            output, code = tail.text(), proc.returncode
            details: dict[str, Any] = {"agent_end": ended.value, "agent": "mini-swe-agent (docker mode)"}
            if ended is AgentEnd.EXIT and code != 0:
                details["reason"] = f"agent exited with code {code}"
                return EpisodeResult(EpisodeStatus.AGENT_ERROR, None, scorable=False, agent_output=output,
                                     exit_code=code, details=details, timings=timings)
            grading_started = time.monotonic()
            try:
                tree = host_repo if host_repo is not None else await asyncio.to_thread(
                    self._export, sandbox_id, workdir, root / "export")
                grade = await self.grader.grade(task, tree)
            except Exception as exc:
                details["reason"] = f"grading failed: {type(exc).__name__}: {exc}"
                return EpisodeResult(EpisodeStatus.INFRA_ERROR, None, scorable=False, agent_output=output,
                                     exit_code=code, details=details, timings=timings)
            finally:
                timings["grading"] = time.monotonic() - grading_started
            details.update(grade.details or {})
            status = EpisodeStatus.COMPLETED if ended is AgentEnd.EXIT else EpisodeStatus.BUDGET
            return EpisodeResult(status if grade.scorable else EpisodeStatus.INFRA_ERROR,
                                 grade.reward if grade.scorable else None, resolved=bool(grade.resolved),
                                 scorable=bool(grade.scorable), agent_output=output, exit_code=code, details=details,
                                 timings=timings)
        finally:
            await asyncio.shield(self._cleanup(proc, sandbox_id, root))

    async def _kill(self, proc: asyncio.subprocess.Process | None) -> None:
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), self.config.kill_timeout_s)

    def _stop_container(self, name: str) -> None:
        # Stop (not remove) so the tree can still be exported; the processes mini started end with it.
        with contextlib.suppress(Exception):
            self.client.api.kill(name)

    def _export(self, name: str, workdir: str, dest: Path) -> Path:
        from rollout_worker.environment.sandbox.docker.client import StreamReader

        stream, _ = self.client.api.get_archive(name, workdir + "/.")
        dest.mkdir()
        with tarfile.open(fileobj=StreamReader(stream), mode="r|") as tar:
            tar.extractall(dest, filter=safe_tar_member)
        entries = list(dest.iterdir())
        return entries[0] if len(entries) == 1 and entries[0].is_dir() and entries[0].name in (
            ".", Path(workdir).name) else dest

    async def _cleanup(self, proc: asyncio.subprocess.Process | None, name: str, root: Path) -> None:
        await self._kill(proc)
        # mini removes its container in the background at exit; ours may still exist (or be created late by a
        # `docker run` mini was killed during): remove by name, retrying briefly until it is gone.
        deadline = time.monotonic() + 30
        while await asyncio.to_thread(self._exists, name) and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.client.api.remove_container, name, force=True)
            await asyncio.sleep(0.2)
        await asyncio.to_thread(remove_tree, root)

    def _exists(self, name: str) -> bool:
        try:
            self.client.api.inspect_container(name)
            return True
        except Exception:
            return False

