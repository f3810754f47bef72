"""The warm start's scripted teacher (trainer/warm_start/teacher.py): on every embedded task its three turns are
tool calls TRL's parser (the worker's) reads as one bash call each, in order look / fix / submit, and its fix command (line edits by sed),
run by bash in a checkout of the task, changes the tree exactly as the gold patch does.

The whole path with the real mini-swe-agent, gate and host grading is checked by tests/e2e/test_warm_start_e2e.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer
from rollout_worker.environment.tasks import embedded_task_names, materialize_embedded_repo
from rollout_worker.environment.tasks.embedded_tasks import EMBEDDED_DIR
from rollout_worker.serving.chat_template import resolve_training_template
from rollout_worker.serving.parsing import parse_completion
from trainer.warm_start.build import _run_bounded
from trainer.warm_start.measure import bash_command
from trainer.warm_start.teacher import SUBMIT, Teacher, load_task_scripts

BASH_TOOL = [{"type": "function", "function": {"name": "bash", "description": "run a command", "parameters": {
    "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}]


def _prompt(tokenizer, template, problem: str, replies: list[dict]) -> list[int]:
    """The prompt the worker would send after `replies` (each answered by a tool result), as token ids."""
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": f"Please solve this issue: {problem}"}]
    for i, reply in enumerate(replies):
        calls = [{"id": f"c{i}", "type": "function", "function": {"name": c["function"]["name"], "arguments":
                  json.loads(c["function"]["arguments"])}} for c in reply["tool_calls"]]
        messages += [{"role": "assistant", "content": reply["content"], "tool_calls": calls},
                     {"role": "tool", "tool_call_id": f"c{i}", "content": "{\"returncode\": 0, \"output\": \"\"}"}]
    return tokenizer.apply_chat_template(messages, chat_template=template, tools=BASH_TOOL, tokenize=True,
                                         add_generation_prompt=True, return_dict=False)


def test_teacher_turns_parse_as_look_fix_submit_and_the_fix_is_the_gold_patch(tmp_path):
    tokenizer = load_qwen3_tokenizer()
    template = resolve_training_template(tokenizer)
    scripts = load_task_scripts()
    assert [s.name for s in scripts] == embedded_task_names()
    teacher = Teacher(scripts)
    for script in scripts:
        problem = json.loads((EMBEDDED_DIR / script.name / "task.json").read_text())["problem_statement"]
        replies, commands = [], []
        for _ in range(3):
            prompt = _prompt(tokenizer, template, problem, replies)
            text = teacher.reply(tokenizer.decode(prompt))
            ids = tokenizer.encode(text, add_special_tokens=False)
            parsed = parse_completion(tokenizer, ids, prompt, BASH_TOOL)
            assert parsed.ok and len(parsed.message["tool_calls"]) == 1, (script.name, text)
            command = json.loads(parsed.message["tool_calls"][0]["function"]["arguments"])["command"]
            assert command == bash_command(text)  # the measure reads the same call the worker parsed
            replies.append(parsed.message)
            commands.append(command)
        look, fix, submit = commands
        assert script.path in look and fix.startswith("sed -i ") and submit == SUBMIT

        base, _ = materialize_embedded_repo(script.name, tmp_path / "cache")
        by_teacher, by_gold = tmp_path / f"{script.name}-teacher", tmp_path / f"{script.name}-gold"
        shutil.copytree(base, by_teacher)
        shutil.copytree(base, by_gold)
        subprocess.run(["bash", "-c", fix], cwd=by_teacher, check=True, capture_output=True)
        subprocess.run(["git", "apply", str(EMBEDDED_DIR / script.name / "gold.patch")], cwd=by_gold, check=True)
        assert (by_teacher / script.path).read_text() == (by_gold / script.path).read_text() != (
            base / script.path).read_text()


def test_teacher_gives_each_rollout_of_a_task_the_next_look_variant():
    scripts = load_task_scripts()
    teacher = Teacher(scripts)
    prompt = f"<|im_start|>user\nPlease solve this issue: {scripts[0].marker}<|im_end|>\n<|im_start|>assistant\n"
    looks = [bash_command(teacher.reply(prompt)) for _ in range(4)]
    assert len(set(looks[:3])) == 3 and looks[3] == looks[0]


def test_warm_start_tasks_are_embedded_ones_and_a_subset_is_cached_apart(tmp_path):
    import pytest

    from intercept_common.errors import UserError
    from trainer.warm_start.build import check_teacher_tasks, warm_model_dir

    check_teacher_tasks("embedded")
    check_teacher_tasks("embedded:dateranges,iniconf")
    for bad, says in (("synth", "embedded tasks only"), ("embedded:nope", "unknown: nope"), ("embedded:", "only")):
        with pytest.raises(UserError, match=says):
            check_teacher_tasks(bad)
    full, subset = warm_model_dir(0, 720, tmp_path), warm_model_dir(0, 720, tmp_path, "embedded:dateranges")
    assert full.name == "tiny-qwen3-mini-warm-v2-s0-n720" and subset.name.startswith(full.name + "-t")
    assert subset != warm_model_dir(0, 720, tmp_path, "embedded:iniconf")


def test_teacher_rollouts_past_their_bound_are_stopped_as_ctrl_c_would_stop_them():
    """The recording subprocess is bounded: past the limit it gets SIGINT (its `finally` cleans up), then no more."""
    code = ("import sys, time\ntry:\n    print('started', file=sys.stderr, flush=True); time.sleep(60)\n"
            "finally:\n    print('cleaned up', file=sys.stderr, flush=True)")
    code_, stderr = _run_bounded([sys.executable, "-c", code], 1)
    assert code_ is None and stderr.startswith("started\ncleaned up\n") and "KeyboardInterrupt" in stderr
    assert _run_bounded([sys.executable, "-c", "import sys; sys.exit(3)"], 30) == (3, "")

