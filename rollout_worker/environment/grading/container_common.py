"""What every one-off grading container shares (the SWE-bench grader, the Harbor verifier, the test executor): the
container grading config (it has the shared `GradingConfig`), the infrastructure-failure type (its result is
`host.unscorable`), the reaper's labels, a lazily created Docker client, and start / exec / remove helpers that bound every wait
and never leak a container."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from intercept_common.errors import ConfigError
from rollout_worker.environment.grading.host import GradingConfig
from rollout_worker.environment.sandbox.docker.client import docker_client, in_own_thread
from rollout_worker.environment.sandbox.docker.config import LABEL, OWNER_PID_LABEL, OWNER_START_LABEL
from rollout_worker.environment.sandbox.registry import process_start_time
from rollout_worker.environment.tasks.trees import TreeFilter

logger = logging.getLogger(__name__)


class GradingInfraError(RuntimeError):
    """A grading step failed for reasons outside the agent's control: the result is unscorable, never reward 0."""


@dataclass
class ContainerGradingConfig:
    """How the container graders grade: the grading config every grader shares (`grading`: reward mode, test and git
    timeouts, patch limits, tree filter, work root; one default each) plus what only a grading container has.

    The graders read the shared knobs through properties under their container-side names (`timeout_s` is
    `grading.test_timeout_s`; `mem_limit`, `pids_limit` and `cpus` are the `container_*`
    fields), so a user's `grading:` section reaches container grading unchanged.
    """

    _argument_group_name = "Grading containers: limits of the SWE-bench / Harbor grading container (--sandbox docker)"
    _config_section = "container_grading"  # its YAML section (intercept_common.config_tree)

    grading: GradingConfig = field(default_factory=GradingConfig, metadata={
        "help": "The grading knobs every grader shares (the `grading:` section)."})
    keep_log_chars: int = field(default=200_000, metadata={
        "help": "Eval log kept in the record (details['eval_log']; past this, its head and tail), so that "
                "`intercept-rl grade` can re-grade it. Harbor keeps this much of its verifier log's tail."})
    container_mem_limit: str | None = field(default="8g", metadata={
        "help": "Memory limit of a grading container (also its swap limit); unset: unlimited."})
    container_pids_limit: int | None = field(default=4096, metadata={
        "help": "Process limit of a grading container; unset: unlimited."})
    container_cpus: float | None = field(default=None, metadata={
        "help": "CPUs a grading container may use; unset: unlimited."})
    docker_timeout_s: float = field(default=300.0, metadata={"help": "Timeout of one Docker API call of a grader."})

    def __post_init__(self) -> None:
        if self.keep_log_chars < 0 or not self.docker_timeout_s > 0:
            raise ConfigError(f"keep_log_chars must be >= 0 and docker_timeout_s > 0, got {self.keep_log_chars} and "
                              f"{self.docker_timeout_s}")
        if (self.container_pids_limit is not None and self.container_pids_limit < 1
                or self.container_cpus is not None and not self.container_cpus > 0):
            raise ConfigError(f"container_pids_limit must be >= 1 and container_cpus > 0 when set, got "
                              f"{self.container_pids_limit} and {self.container_cpus}")

    @property
    def reward_mode(self) -> str:
        return self.grading.reward_mode

    @property
    def timeout_s(self) -> float:
        """The limit of the test command in the container: the shared `grading.test_timeout_s`."""
        return self.grading.test_timeout_s

    @property
    def git_timeout_s(self) -> float:
        return self.grading.git_timeout_s

    @property
    def tree_filter(self) -> TreeFilter:
        return self.grading.tree_filter

    @property
    def max_patch_bytes(self) -> int:
        return self.grading.max_patch_bytes

    @property
    def keep_patch_chars(self) -> int:
        return self.grading.keep_patch_chars

    @property
    def work_root(self) -> str | None:
        return self.grading.work_root

    @property
    def mem_limit(self) -> str | None:
        return self.container_mem_limit

    @property
    def pids_limit(self) -> int | None:
        return self.container_pids_limit

    @property
    def cpus(self) -> float | None:
        return self.container_cpus



def container_labels(kind: str) -> dict[str, str]:
    """Labels that let the reaper find a grading container of this process after a crash."""
    return {LABEL: f"{kind}-{secrets.token_hex(6)}", OWNER_PID_LABEL: str(os.getpid()),
            OWNER_START_LABEL: str(process_start_time(os.getpid()) or "")}


def isolated_spec(image: str, kind: str, *, mem_limit: str | None, pids_limit: int | None,
                  cpus: float | None = None, **extra: Any) -> dict[str, Any]:
    """`containers.run` arguments of an idle, network-less, labelled container with limits; `extra` adds to them."""
    spec: dict[str, Any] = dict(image=image, command=["sleep", "infinity"], detach=True, init=True,
                                network_mode="none", labels=container_labels(kind),
                                security_opt=["no-new-privileges"], user="0:0")
    if mem_limit:
        spec.update(mem_limit=mem_limit, memswap_limit=mem_limit)
    if pids_limit:
        spec["pids_limit"] = pids_limit
    if cpus:
        spec["nano_cpus"] = int(cpus * 1e9)
    spec.update(extra)
    return spec


class LazyDockerClient:
    """A Docker client created at first use (constructing a grader must not need a daemon), or the one injected."""

    def __init__(self, client: Any = None, timeout_s: float = 300.0):
        self._client = client
        self._timeout_s = timeout_s

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client(self._timeout_s)
        return self._client

    @property
    def created(self) -> Any:
        """The client if it exists already (injected or used), else None: to share it without connecting."""
        return self._client


async def start_container(client: Any, spec: dict[str, Any], what: str) -> Any:
    try:
        return await asyncio.to_thread(client.containers.run, **spec)
    except Exception as exc:
        raise GradingInfraError(f"{what} container did not start: {exc}") from exc


async def exec_output(client: Any, container_id: str, argv: list[str], timeout_s: float, what: str,
                      **exec_options: Any) -> tuple[str, int | None]:
    """Run `argv` in the container; its combined output (decoded) and exit code. Past `timeout_s`: infra error."""
    exec_id = (await asyncio.to_thread(client.api.exec_create, container_id, argv, stdout=True, stderr=True,
                                       **exec_options))["Id"]

    def run() -> tuple[str, int | None]:
        chunks = list(client.api.exec_start(exec_id, stream=True))
        return b"".join(chunks).decode("utf-8", "replace"), client.api.exec_inspect(exec_id).get("ExitCode")

    try:
        return await asyncio.wait_for(asyncio.shield(in_own_thread(run)), timeout_s)
    except TimeoutError as exc:
        raise GradingInfraError(f"{what} did not finish within {timeout_s:g}s") from exc


async def remove_quietly(container: Any, what: str) -> None:
    """Remove a container; a failure is logged and left to `reap_docker_orphans` (its labels name this process)."""
    try:
        await asyncio.to_thread(container.remove, force=True)
    except Exception as exc:
        logger.warning("removing %s container failed: %r", what, exc)
