"""How a turn the token limit cut is reported follows the rollout's agent, unless the user says otherwise (issue #29).

Each launcher declares `report_truncation`; the worker opens every rollout on the gate with its runner's
declaration, and `GateConfig.report_truncation` (the `--report-truncation` flag), when set, overrides it. The worker
test drives real rollouts through the real gate and the local engine (tiny model, 8-token turns: every reply is cut)
with an in-process openai-SDK agent that records the finish reason it was told.
"""

from __future__ import annotations

import asyncio

import openai
import pytest

from control_plane import GateConfig
from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer
from rollout_worker.config import WorkerConfig
from rollout_worker.environment.agents import get_agent
from rollout_worker.environment.episode import SandboxEpisodeRunner
from rollout_worker.outcomes import EpisodeStatus
from rollout_worker.serving.chat_template import resolve_training_template
from rollout_worker.types import EpisodeResult, Task
from rollout_worker.worker import RolloutWorker

# What each CLI declares, and why (each launcher's comment): False where a reported cut turn made the CLI exit,
# retry or re-send it (measured, docs/agents.md), True where it carries on.
DECLARED = {"codex": False, "claude-code": False, "qwen-code": False, "gemini-cli": True, "opencode": True,
            "pi": True, "mini-swe-agent": True, "single-shot": True}


@pytest.mark.parametrize(("agent", "declared"), sorted(DECLARED.items()))
def test_each_cli_declares_how_it_wants_a_cut_turn(agent, declared):
    launcher = get_agent(agent)
    assert launcher.report_truncation is declared
    runner = SandboxEpisodeRunner(backend=None, agent=launcher, grader=None)
    assert runner.report_truncation is declared


@pytest.mark.parametrize("spec", ["cmd:true", "oracle", "noop"])
def test_agents_that_declare_nothing_get_the_gate_default(spec):
    assert SandboxEpisodeRunner(backend=None, agent=get_agent(spec), grader=None).report_truncation is None


def test_the_flag_is_unset_by_default_and_takes_true_or_false():
    assert GateConfig().report_truncation is None
    assert GateConfig(report_truncation=False).report_truncation is False


class _FinishReasonAgent:
    """One chat call through the openai SDK; the episode's output is the finish reason the agent was told."""

    def __init__(self, report_truncation: bool | None) -> None:
        self.report_truncation = report_truncation

    async def run(self, task, endpoint, stop):
        def call() -> str:
            client = openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0, timeout=60)
            reply = client.chat.completions.create(model=endpoint.model,
                                                   messages=[{"role": "user", "content": "Write a long story."}])
            client.close()
            return reply.choices[0].finish_reason

        finish = await asyncio.to_thread(call)
        return EpisodeResult(status=EpisodeStatus.COMPLETED, reward=1.0, agent_output=finish, exit_code=0)


def _told(engine_url: str, declared: bool | None, flag: bool | None) -> str:
    from tests.rollout_worker.test_worker import _drain

    tokenizer = load_qwen3_tokenizer()
    config = WorkerConfig(served_model_name="policy", num_generations=1, max_inflight=1, max_groups=1,
                          max_tokens_per_turn=8, seed=0, keep_trajectories=True)
    worker = RolloutWorker(config, tasks=[Task("t0", "demo/repo", "0" * 40, "fix it")],
                           episode_runner=_FinishReasonAgent(declared), tokenizer=tokenizer,
                           chat_template=resolve_training_template(tokenizer), engine_url=engine_url,
                           gate_config=GateConfig(report_truncation=flag))
    worker.start()
    try:
        _, (record,) = _drain(worker, 1, timeout=120)
    finally:
        worker.stop()
    assert record["drift"]["sampled_tokens"] == 8  # the engine's reply was cut at the turn limit
    return record["agent_output"]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("declared", "flag", "told"), [
    (False, None, "stop"),  # the agent's declaration: a cut turn reads as a normal end of turn
    (True, None, "length"),
    (None, None, "length"),  # an agent that declares nothing: reported, as before
    (False, True, "length"),  # the user's flag overrides the declaration, both ways
    (True, False, "stop"),
])
def test_the_worker_opens_each_rollout_with_the_agents_declaration(engine, declared, flag, told):
    assert _told(engine.url, declared, flag) == told
