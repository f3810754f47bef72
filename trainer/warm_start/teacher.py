"""A scripted teacher engine: answers mini-swe-agent's turns on the embedded tasks with a correct multi-turn solution.

Why an engine and not a fake agent: the warm-start data must be exactly what the real agent sends and what the
worker records. The teacher speaks the part of vLLM's `/v1/completions` the worker uses (token-id prompt in, token
ids + logprobs out), so the real mini-swe-agent, the gate, prompt assembly and host grading all run unchanged; only
the sampler is replaced by a script. Its replies are Qwen3 tool calls, written as the model should write them:

    THOUGHT: <why>\\n<tool_call>\\n{"name": "bash", "arguments": {"command": "<cmd>"}}\\n</tool_call><|im_end|>

The script per task (read from the prompt: the task by its problem statement, the step by the assistant turns held):
  1. look at the numbered lines the fix touches (`nl -ba FILE | sed -n 'A,Bp'`, `cat -n`, or a wider window);
  2. apply the fix as line edits: one `sed -i -e 'Nc\\NEW' -e 'Ma\\NEW' ... FILE` (`sed_fix`), addressed by the
     line numbers the look just printed and carrying only the new lines. Why not `git apply` of the gold patch: a
     2-layer policy has to reproduce every context and removed line of a diff at temperature 1 (~300 tokens); the
     edit is ~30 tokens on the one-line fixes, within its reach, so the warm start solves some tasks and GRPO has a
     signal (docs/benchmarks.md, warm start);
  3. `echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT` (mini-swe-agent's submit command).
Variety across rollouts of one task comes from the look command (chosen round-robin per task), so a warm start does
not see one trajectory per task only. Logprobs are 0.0: the teacher is deterministic.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from rollout_worker.environment.tasks.embedded_tasks import EMBEDDED_DIR, embedded_task_names

SUBMIT = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
ASSISTANT_HEADER = "<|im_start|>assistant"


@dataclass(frozen=True)
class TaskScript:
    """What the teacher needs of one embedded task: how to recognise it and how to fix it."""

    name: str
    marker: str  # the problem statement's first line: present in every prompt of the task
    path: str  # the file the gold patch changes
    first_line: int  # the hunk's lines in the base file, for the look command
    last_line: int
    patch: str


def load_task_scripts(root: Path = EMBEDDED_DIR) -> list[TaskScript]:
    """One script per embedded task (each gold patch changes one file, one hunk range used for the look)."""
    scripts = []
    for name in embedded_task_names(root):
        task = json.loads((root / name / "task.json").read_text())
        patch = (root / name / "gold.patch").read_text()
        paths = re.findall(r"^\+\+\+ b/(\S+)$", patch, flags=re.M)
        hunks = [(int(a), int(b or 1)) for a, b in re.findall(r"^@@ -(\d+)(?:,(\d+))? ", patch, flags=re.M)]
        if len(set(paths)) != 1 or not hunks:
            raise ValueError(f"embedded task {name}: the teacher expects a gold patch of one file")
        first = max(1, hunks[0][0])
        last = hunks[-1][0] + hunks[-1][1] - 1
        marker = task["problem_statement"].strip().splitlines()[0]
        scripts.append(TaskScript(name, marker, paths[0], first, max(first, last), patch))
    markers = [s.marker for s in scripts]
    if len(set(markers)) != len(markers):
        raise ValueError("two embedded tasks share a problem statement's first line; the teacher cannot tell them")
    return scripts


def _look_commands(script: TaskScript) -> list[tuple[str, str]]:
    a, b = script.first_line, script.last_line
    return [
        (f"Let me read the part of {script.path} the issue is about.", f"nl -ba {script.path} | sed -n '{a},{b}p'"),
        (f"I will look at {script.path} around the buggy code first.", f"cat -n {script.path} | sed -n '{a},{b}p'"),
        (f"First I read the start of {script.path} up to the bug.", f"nl -ba {script.path} | head -n {b}"),
    ]


def _sed_text(lines: list[str]) -> str:
    """Lines as the text of a GNU sed `a`/`c`/`i` command: backslashes doubled, lines joined by backslash-newline."""
    return "\\\n".join(line.replace("\\", "\\\\") for line in lines)


def sed_fix(patch: str) -> str:
    """The gold patch of one file as one `sed -i` of line edits at the base file's line numbers (sed addresses the
    input's lines, so every edit of one invocation uses the unchanged numbering)."""
    path = re.findall(r"^\+\+\+ b/(\S+)$", patch, flags=re.M)[0]
    edits: list[str] = []
    for hunk in re.split(r"^(?=@@ )", patch, flags=re.M)[1:]:
        header, *lines = hunk.splitlines()
        line = int(re.match(r"@@ -(\d+)", header).group(1))
        start, removed, added = line, [], []

        def flush():
            if removed and added:
                span = f"{start}" if len(removed) == 1 else f"{start},{start + len(removed) - 1}"
                edits.append(f"{span}c\\{_sed_text(added)}")
            elif removed:
                edits.append(f"{start},{start + len(removed) - 1}d")
            elif added:
                edits.append(f"{start - 1}a\\{_sed_text(added)}" if start > 1 else f"1i\\{_sed_text(added)}")
            removed.clear()
            added.clear()

        for text in lines:
            tag, body = text[:1], text[1:]
            if tag == "-":
                if not removed and not added:
                    start = line
                removed.append(body)
                line += 1
            elif tag == "+":
                if not removed and not added:
                    start = line
                added.append(body)
            elif tag in (" ", ""):
                flush()
                line += 1
        flush()
    quoted = " ".join("-e '" + edit.replace("'", "'\\''") + "'" for edit in edits)
    return f"sed -i {quoted} {path}"


def _tool_call_text(thought: str, command: str) -> str:
    call = json.dumps({"name": "bash", "arguments": {"command": command}}, ensure_ascii=False)
    return f"THOUGHT: {thought}\n<tool_call>\n{call}\n</tool_call><|im_end|>"


class Teacher:
    """Decides the reply text for a prompt; keeps a round-robin counter of look variants per task."""

    def __init__(self, scripts: list[TaskScript]):
        self.scripts = scripts
        self._variant = defaultdict(itertools.count)

    def task_of(self, prompt_text: str) -> TaskScript | None:
        return next((s for s in self.scripts if s.marker in prompt_text), None)

    def reply(self, prompt_text: str) -> str:
        script = self.task_of(prompt_text)
        if script is None:
            return f"THOUGHT: I do not know this task, so I submit.\n{_tool_call_text('Nothing to do.', SUBMIT)}"
        step = prompt_text.count(ASSISTANT_HEADER) - 1  # the generation prompt ends with one header
        if step <= 0:
            looks = _look_commands(script)
            return _tool_call_text(*looks[next(self._variant[script.name]) % len(looks)])
        if step == 1:
            return _tool_call_text(f"Now I fix {script.path}.", sed_fix(script.patch))
        return _tool_call_text("The fix is applied, so I submit my work.", SUBMIT)


class TeacherServer:
    """`/health`, `/v1/models` and `/v1/completions` (token ids in and out) in vLLM's shapes, scripted by `Teacher`."""

    def __init__(self, teacher: Teacher, tokenizer, *, served_model_name: str = "policy", max_model_len: int = 4096):
        self.teacher = teacher
        self.tokenizer = tokenizer
        self.served_model_name = served_model_name
        self.max_model_len = max_model_len
        self.turns = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([web.get("/health", self.health), web.get("/v1/models", self.models),
                        web.post("/v1/completions", self.completions)])
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def models(self, request: web.Request) -> web.Response:
        card = {"id": self.served_model_name, "object": "model", "owned_by": "intercept-rl teacher",
                "max_model_len": self.max_model_len}
        return web.json_response({"object": "list", "data": [card]})

    async def completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], list):
            prompt = prompt[0]
        if not (isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt)):
            return web.json_response({"error": {"message": "the teacher takes token-id prompts", "type":
                                                "BadRequestError", "param": "prompt", "code": 400}}, status=400)
        max_tokens = int(body.get("max_tokens") or self.max_model_len - len(prompt))
        if len(prompt) + max_tokens > self.max_model_len:  # the same 400 an engine gives: the rollout ends overlong
            message = (f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                       f"{len(prompt) + max_tokens} tokens ({len(prompt)} in the messages, {max_tokens} in the "
                       "completion). Please reduce the length of the messages or completion.")
            return web.json_response({"error": {"message": message, "type": "BadRequestError",
                                                "param": "input_tokens", "code": 400}}, status=400)
        text = self.teacher.reply(self.tokenizer.decode(prompt, skip_special_tokens=False))
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        finish = "stop"
        if len(ids) > max_tokens:
            ids, finish = ids[:max_tokens], "length"
        self.turns += 1
        choice = {"index": 0, "text": self.tokenizer.decode(ids, skip_special_tokens=True),
                  "logprobs": {"token_logprobs": [0.0] * len(ids), "tokens": [], "text_offset": [],
                               "top_logprobs": []},
                  "finish_reason": finish, "stop_reason": None, "token_ids": ids, "prompt_token_ids": prompt}
        usage = {"prompt_tokens": len(prompt), "completion_tokens": len(ids), "total_tokens": len(prompt) + len(ids)}
        return web.json_response({"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                                  "created": int(time.time()), "model": self.served_model_name,
                                  "choices": [choice], "usage": usage})
