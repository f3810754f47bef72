"""Agents that need no model or no install of ours: `cmd:<shell command>`, `oracle` and `noop`."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from rollout_worker.environment.agents.base import openai_env
from rollout_worker.types import AgentCommand

if TYPE_CHECKING:
    from rollout_worker.protocols import Sandbox
    from rollout_worker.types import RolloutEndpoint, Task


@dataclass
class CommandAgent:
    """Any agent command, run by `/bin/sh -c` in the repo with OPENAI_BASE_URL, OPENAI_API_KEY and OPENAI_MODEL set
    (plus TASK_FILE: a file holding the problem statement, also in $TASK_PROBLEM_STATEMENT). How users plug in
    qwen-code or their own agent: `cmd:qwen --yolo -p "$(cat $TASK_FILE)"`."""

    command: str
    name: str = "cmd"

    def prepare(self, sandbox: Sandbox, endpoint: RolloutEndpoint | None, task: Task) -> AgentCommand:
        task_file = f"{sandbox.home}/task.md"
        env = openai_env(endpoint) | {"TASK_FILE": task_file, "TASK_PROBLEM_STATEMENT": task.problem_statement,
                                      "TASK_INSTANCE_ID": task.instance_id}
        return AgentCommand(["/bin/sh", "-c", self.command], env, {task_file: task.problem_statement.encode()})

    def __str__(self) -> str:
        return f"cmd:{shlex.quote(self.command)}"


@dataclass
class OracleAgent:
    """Applies the task's gold patch (written into this sandbox only, for this agent only) and exits."""

    name: str = "oracle"
    calls_model: ClassVar[bool] = False  # `rollouts` starts no engine for it

    def prepare(self, sandbox: Sandbox, endpoint: RolloutEndpoint | None, task: Task) -> AgentCommand:
        if not task.patch.strip():
            raise ValueError(f"task {task.instance_id} has no gold patch for the oracle agent")
        patch_file = f"{sandbox.home}/.oracle/gold.patch"
        # `git apply` works with or without a .git directory; the patch is never on a command line.
        argv = ["git", "apply", "--whitespace=nowarn", "--verbose", patch_file]
        return AgentCommand(argv, {}, {patch_file: task.patch.encode()})


@dataclass
class NoopAgent:
    """Changes nothing and exits: grading then sees the base repository (reward 0 on a real task)."""

    name: str = "noop"
    calls_model: ClassVar[bool] = False

    def prepare(self, sandbox: Sandbox, endpoint: RolloutEndpoint | None, task: Task) -> AgentCommand:
        return AgentCommand(["true"])
