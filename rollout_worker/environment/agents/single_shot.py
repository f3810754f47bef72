"""`single-shot`: asks the policy once and writes its reply into a file of the repo.

The smallest real agent: one OpenAI chat call over HTTP from inside the sandbox (Python's standard library only, so
it runs with any interpreter the sandbox has), the reply's text written to `answer_file`. It exists for tasks
whose reward a tiny random model can move (the learning proof, the CPU demo) and as a template for custom agents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from rollout_worker.environment.agents.base import openai_env
from rollout_worker.types import AgentCommand

if TYPE_CHECKING:
    from rollout_worker.protocols import Sandbox
    from rollout_worker.types import RolloutEndpoint, Task

_SCRIPT = r'''
import json, os, sys, urllib.error, urllib.request

task = open(os.environ["TASK_FILE"], encoding="utf-8").read()
body = {"model": os.environ["OPENAI_MODEL"], "messages": [{"role": "user", "content": task}]}
if os.environ.get("SINGLE_SHOT_MAX_TOKENS"):
    body["max_tokens"] = int(os.environ["SINGLE_SHOT_MAX_TOKENS"])
request = urllib.request.Request(
    os.environ["OPENAI_BASE_URL"].rstrip("/") + "/chat/completions", data=json.dumps(body).encode(),
    headers={"Content-Type": "application/json", "Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]})
try:
    with urllib.request.urlopen(request, timeout=float(os.environ.get("SINGLE_SHOT_TIMEOUT", "600"))) as response:
        reply = json.load(response)
except urllib.error.HTTPError as error:
    print(f"single-shot: HTTP {error.code}: {error.read()[:500]!r}", file=sys.stderr)
    sys.exit(1)
content = reply["choices"][0]["message"].get("content") or ""
with open(os.environ["SINGLE_SHOT_ANSWER_FILE"], "w", encoding="utf-8") as fh:
    fh.write(content)
print(f"single-shot: wrote {len(content)} characters")
'''


@dataclass
class SingleShotAgent:
    """One chat call; the reply's text goes to `answer_file` (relative to the repo root)."""

    answer_file: str = "answer.txt"
    max_tokens: int | None = None
    name: str = "single-shot"
    # How this CLI wants a turn the token limit cut (GateConfig.report_truncation unset): reported;
    # it writes whatever text came back; the finish reason does not matter to it.
    report_truncation: ClassVar[bool] = True

    def prepare(self, sandbox: Sandbox, endpoint: RolloutEndpoint | None, task: Task) -> AgentCommand:
        if endpoint is None:
            raise ValueError("the single-shot agent needs a rollout endpoint")
        home = sandbox.home
        answer = task.extra.get("answer_file", self.answer_file)
        env = openai_env(endpoint) | {"TASK_FILE": f"{home}/task.md",
                                      "SINGLE_SHOT_ANSWER_FILE": f"{sandbox.workdir}/{answer}"}
        if self.max_tokens:
            env["SINGLE_SHOT_MAX_TOKENS"] = str(self.max_tokens)
        files = {f"{home}/task.md": task.problem_statement.encode(), f"{home}/single_shot.py": _SCRIPT.encode()}
        return AgentCommand(["python3", f"{home}/single_shot.py"], env, files)
