"""The rollout worker end to end on CPU: real gate, real local engine (tiny Qwen3, fp32), real openai-SDK agent
processes, real TRL RolloutSamples — and the fidelity promise: trained logprobs == a teacher-forced forward."""

import asyncio
import itertools
import os
import queue
import sys
import time

import numpy as np
import pytest
import torch

from intercept_common.engine_process import LocalEngineProcess
from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer
from local_engine.embedded import ensure_tiny_model
from rollout_worker.config import WorkerConfig
from rollout_worker.outcomes import EpisodeStatus
from rollout_worker.serving.chat_template import resolve_training_template
from rollout_worker.types import EpisodeResult, Task
from rollout_worker.worker import RolloutWorker
from tests.paths import AGENTS

AGENT = AGENTS / "scripted_agent.py"


class ScriptedAgentRunner:
    """Runs the scripted openai-SDK agent as a subprocess; rewards alternate so groups have variance."""

    def __init__(self, extra_env=None):
        self.rewards = itertools.cycle([1.0, 0.0, 0.0, 1.0])
        self.extra_env = extra_env or {}
        self.pids = []

    async def run(self, task, endpoint, stop):
        env = {"PATH": os.environ["PATH"], "OPENAI_BASE_URL": endpoint.base_url, "OPENAI_API_KEY": endpoint.api_key,
               "OPENAI_MODEL": endpoint.model, **self.extra_env}
        proc = await asyncio.create_subprocess_exec(sys.executable, str(AGENT), env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self.pids.append(proc.pid)
        waiter = asyncio.ensure_future(proc.communicate())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({waiter, stopper}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():  # a grace period, so the test can read what the agent was told
                await asyncio.wait({waiter}, timeout=10)
        finally:
            stopper.cancel()
            if proc.returncode is None:
                proc.kill()
            out, _ = await waiter
        output = out.decode(errors="replace")[-2000:]
        if proc.returncode != 0:
            return EpisodeResult(status=EpisodeStatus.AGENT_ERROR, reward=None, scorable=False, agent_output=output,
                                 exit_code=proc.returncode)
        return EpisodeResult(status=EpisodeStatus.COMPLETED, reward=next(self.rewards), resolved=False, agent_output=output,
                             exit_code=0)


def _teacher_forced_logprobs(model, input_ids, temperature):
    ids = torch.tensor([input_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].float() / temperature
    logp = torch.log_softmax(logits, dim=-1)
    return torch.cat([torch.zeros(1), logp.gather(1, ids[0, 1:, None])[:, 0]]).numpy()


def _drain(worker, n_groups, timeout=240):
    deadline = time.monotonic() + timeout
    while not worker.finished.is_set() and time.monotonic() < deadline:
        worker.check_health(stale_after_s=120)
        time.sleep(0.2)
    assert worker.finished.is_set(), "worker did not finish its groups in time"
    samples, records = [], []
    while True:
        try:
            samples.append(worker.rollout_buffer.get_nowait())
        except queue.Empty:
            break
    while True:
        try:
            records.append(worker.trajectories.get_nowait())
        except queue.Empty:
            break
    return samples, records


@pytest.mark.slow
@pytest.mark.parametrize("stream", ["0", "1"])
def test_worker_rows_are_token_exact_through_the_full_stack(engine, tiny_model_dir, stream):
    from transformers import AutoModelForCausalLM

    tokenizer = load_qwen3_tokenizer()
    template = resolve_training_template(tokenizer)
    tasks = [Task(instance_id=f"task{i}", repo="demo/repo", base_commit="0" * 40, problem_statement="fix it")
             for i in range(2)]
    config = WorkerConfig(num_generations=2, max_inflight=2, max_groups=2, temperature=0.9, max_tokens_per_turn=24,
                          seed=0, keep_trajectories=True)
    runner = ScriptedAgentRunner({"SCRIPTED_STREAM": stream})
    worker = RolloutWorker(config, tasks=tasks, episode_runner=runner, tokenizer=tokenizer, chat_template=template,
                           engine_url=engine.url)
    worker.start()
    try:
        worker.update_model_version(3)
        samples, records = _drain(worker, 2)
    finally:
        worker.stop()

    assert len(records) == 4 and all(r["status"] == "completed" for r in records)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32).eval()
    for rec in records:
        drift = rec["drift"]
        assert rec["turns"] == 4
        timings = rec["turn_timings"]  # per turn: the engine's latency and the serving path's own time
        assert len(timings["engine_s"]) == len(timings["overhead_s"]) == 4
        assert all(t > 0 for t in timings["engine_s"] + timings["overhead_s"])
        assert drift["forks"] == 1, "the truncated history must start a new row, and be counted"
        assert len(rec["rows"]) == 2
        assert drift["sampled_tokens"] > 0 and drift["trained_tokens"] == drift["sampled_tokens"]  # 100% trained
        for row in rec["rows"]:
            mask = np.array(row["completion_mask"], dtype=bool)
            assert mask.any()
            ref = _teacher_forced_logprobs(model, row["input_ids"], 0.9)
            got = np.array(row["old_log_probs"])
            assert np.abs(got[mask] - ref[mask]).max() < 1e-5
            assert np.all(got[~mask] == 0.0)
            assert set(row["model_versions"]) == {3}

    # Samples are TRL's own RolloutSample with the dtypes the trainer's collator needs.
    assert samples, "groups with reward variance must produce samples"
    s = samples[0]
    assert type(s).__module__.startswith("trl.")
    assert s.input_ids.dtype == np.int64 and s.completion_mask.dtype == np.int64
    assert s.old_log_probs.dtype == np.float32 and s.model_version == 3
    by_group = {}
    for r in records:
        by_group.setdefault(r["group_id"], []).append(r)
    for members in by_group.values():
        rewards = np.array([m["reward"] for m in members])
        if rewards.std() > 0:
            expected = (rewards - rewards.mean()) / (rewards.std() + 1e-8)
            assert [m["advantage"] for m in members] == pytest.approx(list(expected))
        else:
            assert all(m["advantage"] is None and m["group_dropped"] == "zero_variance" for m in members)


@pytest.mark.slow
def test_worker_overlong_prompt_ends_the_rollout_with_context_length_exceeded(tiny_model_dir):
    tokenizer = load_qwen3_tokenizer()
    template = resolve_training_template(tokenizer)
    with LocalEngineProcess(str(tiny_model_dir), served_model_name="policy", max_model_len=128) as small_engine:
        config = WorkerConfig(num_generations=1, max_inflight=1, max_groups=1, max_tokens_per_turn=16,
                              keep_trajectories=True, overlong_policy="exclude")
        worker = RolloutWorker(config, tasks=[Task("t", "r", "c", "p")], episode_runner=ScriptedAgentRunner(
            {"SCRIPTED_TURNS": "12"}), tokenizer=tokenizer, chat_template=template, engine_url=small_engine.url)
        worker.start()
        try:
            _, records = _drain(worker, 1)
        finally:
            worker.stop()
    (rec,) = records
    assert rec["status"] == "overlong" and rec["scorable"] is False and rec["reward"] is None
    assert rec["details"]["turn_end"] == "overlong"
    assert "HTTP 400 code=context_length_exceeded" in rec["agent_output"]  # what the agent was told


def test_a_deployment_fixes_the_gate_port_and_secret_for_the_training_worker(engine, tmp_path, monkeypatch):
    """`train --gate-port` and INTERCEPT_RL_GATE_SECRET (a Space's status page proxies to a fixed port; keys derive
    from the deployment's secret): the training worker's gate listens there and every rollout key is
    HMAC(secret, rollout id)."""
    import hashlib
    import hmac
    import socket

    import requests

    from trainer.components import build_rollout_worker
    from trainer.config import parse_train_args

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret = "s3cret-" + "x" * 32
    monkeypatch.setenv("INTERCEPT_RL_GATE_SECRET", secret)
    script, training = parse_train_args(["--preset", "cpu-demo", "--agent", "single-shot", "--gate-port", str(port),
                                         "--output-dir", str(tmp_path), "--report-to", "none"])
    worker = build_rollout_worker(script, training, model_path=str(ensure_tiny_model()), engine_url=engine.url)
    seen = []

    class Recorder:
        async def run(self, task, endpoint, stop):
            seen.append(endpoint)
            return EpisodeResult(status=EpisodeStatus.COMPLETED, reward=0.0, exit_code=0)

    worker.episode_runner = Recorder()
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen, "no rollout started"
        health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    finally:
        worker.stop()
    assert health.status_code == 200
    endpoint = seen[0]
    assert endpoint.base_url.startswith(f"http://127.0.0.1:{port}/rollout/")
    expected = "irl-" + hmac.new(secret.encode(), endpoint.rollout_id.encode(), hashlib.sha256).hexdigest()
    assert endpoint.api_key == expected
