"""The worker's side of a dialect test, shared by test_gate_anthropic.py and test_gate_responses.py.

`ScriptedTurns` answers gate calls through the worker's own per-turn path (token-exact prompt assembly, TRL's parser)
with a scripted sampled text, so a reply with a think block and tool calls — which the tiny random model never
samples — is echoed back through a dialect and must extend the held conversation without a fork.
`run_rollouts` + `assert_token_exact`: full rollouts through the real worker and local engine (tiny Qwen3); the agent
runs in-process (sync SDK code on a thread). Checked: no fork, 100 % of sampled tokens trained, old_log_probs equal
to a teacher-forced forward.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Callable

import numpy as np
import torch

from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer
from rollout_worker.config import WorkerConfig
from rollout_worker.outcomes import EpisodeStatus
from rollout_worker.serving.assembly import PromptAssembler
from rollout_worker.serving.chat_template import resolve_training_template
from rollout_worker.serving.parsing import parse_completion
from rollout_worker.types import EpisodeResult, Task
from rollout_worker.worker import RolloutWorker

TEMPERATURE = 0.9
# What the model "samples" on a tool turn: a think block, text, and a tool call in Qwen3's format.
SAMPLED_TOOL_TURN = ('<think>\nThe test fails in src/; list it.\n</think>\n\nI will list the files.\n<tool_call>\n'
                     '{"name": "bash", "arguments": {"command": "ls -la src/ && echo \'ü\'"}}\n</tool_call>')


class ScriptedTurns:
    """Serves gate calls the way `turns.TurnServer` does, with scripted sampled text in place of the engine."""

    def __init__(self) -> None:
        self.tokenizer = load_qwen3_tokenizer()
        assembler = PromptAssembler(self.tokenizer, resolve_training_template(self.tokenizer))
        self.conversation = assembler.new_conversation()
        self.turn_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.sampled = 0

    async def answer(self, rollout, sampled_text: str):
        """Take the next call, plan its prompt, 'sample' `sampled_text`, parse and commit it, reply; return
        (request, plan, parsed message)."""
        req = await rollout.next_request(timeout=10)
        plan = self.conversation.prepare(req.messages, req.tools)
        ids = self.tokenizer.encode(sampled_text, add_special_tokens=False) + [self.turn_end]
        parsed = parse_completion(self.tokenizer, ids, plan.prompt_ids, req.tools)
        assert parsed.ok, parsed.error
        self.conversation.commit(plan, ids, [-0.5] * len(ids), parsed.message, "stop", 1)
        self.sampled += len(ids)
        finish = "tool_calls" if parsed.message.get("tool_calls") else "stop"
        usage = {"prompt_tokens": len(plan.prompt_ids), "completion_tokens": len(ids)}
        assert await req.reply(parsed.message, finish_reason=finish, usage=usage)
        return req, plan, parsed.message

    def assert_one_row_fully_trained(self) -> None:
        (row,) = self.conversation.rows()
        assert self.conversation.stats["forks"] == 0
        assert sum(row.completion_mask) == self.sampled  # every sampled token is trained


class SdkAgentRunner:
    """Runs `agent(endpoint, variant)` on a thread per episode; variants cycle, so one group mixes them."""

    def __init__(self, agent: Callable[[Any, Any], None], variants: list[Any]):
        self.agent = agent
        self.variants = itertools.cycle(variants)
        self.rewards = itertools.cycle([1.0, 0.0])

    async def run(self, task, endpoint, stop):
        variant = next(self.variants)
        try:
            await asyncio.to_thread(self.agent, endpoint, variant)
        except Exception as exc:  # noqa: BLE001 - what the agent was told ends up in the record
            return EpisodeResult(status=EpisodeStatus.AGENT_ERROR, reward=None, scorable=False,
                                 agent_output=f"{variant}: {exc!r}")
        return EpisodeResult(status=EpisodeStatus.COMPLETED, reward=next(self.rewards), agent_output=str(variant),
                             exit_code=0)


def run_rollouts(engine_url: str, runner: SdkAgentRunner, n: int) -> list[dict]:
    from tests.rollout_worker.test_worker import _drain

    tokenizer = load_qwen3_tokenizer()
    config = WorkerConfig(served_model_name="policy", num_generations=n, max_inflight=n, max_groups=1,
                          temperature=TEMPERATURE, max_tokens_per_turn=24, seed=0, keep_trajectories=True)
    worker = RolloutWorker(config, tasks=[Task("t0", "demo/repo", "0" * 40, "fix it")], episode_runner=runner,
                           tokenizer=tokenizer, chat_template=resolve_training_template(tokenizer),
                           engine_url=engine_url)
    worker.start()
    try:
        worker.update_model_version(2)
        _, records = _drain(worker, 1)
    finally:
        worker.stop()
    return records


def assert_token_exact(records: list[dict], model_dir, turns: int) -> None:
    from transformers import AutoModelForCausalLM

    from tests.rollout_worker.test_worker import _teacher_forced_logprobs

    assert records and all(r["status"] == "completed" for r in records), [r["agent_output"] for r in records]
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    for rec in records:
        drift = rec["drift"]
        assert rec["turns"] == turns, rec["agent_output"]
        assert drift["forks"] == 0 and len(rec["rows"]) == 1, (rec["agent_output"], drift)  # every echo matched
        assert drift["sampled_tokens"] > 0 and drift["trained_tokens"] == drift["sampled_tokens"]  # 100 % trained
        row = rec["rows"][0]
        mask = np.array(row["completion_mask"], dtype=bool)
        ref = _teacher_forced_logprobs(model, row["input_ids"], TEMPERATURE)
        got = np.array(row["old_log_probs"])
        assert np.abs(got[mask] - ref[mask]).max() < 1e-5
        assert np.all(got[~mask] == 0.0) and set(row["model_versions"]) == {2}
