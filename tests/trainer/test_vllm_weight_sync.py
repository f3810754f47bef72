"""vLLM weight sync without NCCL (trainer/vllm_weight_sync.py) and the worker following TRL's adapter sync.

`disk` runs for real against the local engine, which speaks the same routes vLLM does for it (`/is_paused`, `/pause`,
`/collective_rpc` `reload_weights`, `/resume`): a real TRL trainer syncs through it and after every sync the engine's
logprobs equal the trainer's. `ipc` needs CUDA and vLLM (run on the device: docs/gpu.md); here its HTTP sequence and
errors run against a stand-in. The LoRA adapter naming runs through the real worker, agents and engine, with a
recording proxy in between (the local engine serves no adapters; vLLM does: docs/gpu.md).
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import requests
import torch
from aiohttp import ClientSession, web

from trainer.vllm_weight_sync import (
    VllmDiskWeightTransfer,
    VllmIpcWeightTransfer,
    VllmWeightSyncError,
    write_safetensors_dir,
)


class ProbingDiskTransfer(VllmDiskWeightTransfer):
    """After every sync, sample a fixed probe from the engine and score it with the trainer's model (F2)."""

    def __init__(self, *args, probe_prompt_ids, **kwargs):
        super().__init__(*args, **kwargs)
        self.probe_prompt_ids = probe_prompt_ids
        self.model = None
        self.probes: list[dict] = []

    def resume(self) -> None:
        from tests.trainer.test_trainer_helpers import engine_complete, trainer_logprobs

        super().resume()
        ids, engine_lp = engine_complete(self.engine_url, self.probe_prompt_ids, max_tokens=16, temperature=1.0,
                                         seed=1234)
        ours = trainer_logprobs(self.model, self.probe_prompt_ids + ids)[len(self.probe_prompt_ids) - 1:]
        engine = torch.tensor(engine_lp)
        version = requests.get(f"{self.engine_url}/weights_version", timeout=30).json()["version"]
        self.probes.append({"version": self.version, "engine_version": version, "engine": engine,
                            "max_abs_diff": float((engine - ours).abs().max())})


@pytest.mark.slow
def test_disk_sync_makes_the_engine_serve_the_trainers_weights(engine, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from tests.trainer.test_trainer_helpers import PROMPTS, EngineSampleWorker
    from tests.trainer.test_weight_sync import _train_args
    from trainer.train_swe_async_grpo import build_trainer

    steps = 2
    args = _train_args(tiny_model_dir, tmp_path / "out", "--max-steps", str(steps), "--learning-rate", "1e-3")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    probe = tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True, tokenize=True, return_dict=False)
    worker = EngineSampleWorker(engine.url, tokenizer, num_generations=4, max_tokens=12)
    start_version = requests.get(f"{engine.url}/weights_version", timeout=30).json()["version"]
    # Tiny shards, so the index and several files are exercised.
    transfer = ProbingDiskTransfer(engine.url, str(tmp_path / "sync"), shard_bytes=256 * 1024, timeout_s=60,
                                   probe_prompt_ids=probe)
    trainer = build_trainer(args, worker, transfer)
    transfer.model = trainer.model
    trainer.train()

    print("disk sync: max |engine - trainer| per sync:", [f"{p['max_abs_diff']:.2e}" for p in transfer.probes],
          transfer.last_sync)
    assert len(transfer.probes) == steps + 1  # the cold sync, then one per step
    for probe_result in transfer.probes:
        assert probe_result["engine_version"] == start_version + probe_result["version"]
        assert probe_result["max_abs_diff"] <= 1e-4, probe_result
    assert (transfer.probes[-1]["engine"] - transfer.probes[0]["engine"]).abs().max() > 1e-3, "weights never moved"
    # Only the last two versions stay on disk; each is a complete sharded checkpoint with its index.
    kept = sorted(p.name for p in (tmp_path / "sync").iterdir())
    assert kept == [f"v{steps}", f"v{steps + 1}"]
    last = tmp_path / "sync" / f"v{steps + 1}"
    index = json.loads((last / "model.safetensors.index.json").read_text())
    assert len(list(last.glob("*.safetensors"))) > 1
    assert {n for n, _ in trainer.model.named_parameters()} <= set(index["weight_map"])
    assert "model.layers.0.self_attn.q_proj.weight" in index["weight_map"]


def test_write_safetensors_dir_is_atomic_and_refuses_duplicates(tmp_path):
    tensors = [("a", torch.ones(4, 4)), ("b", torch.zeros(300)), ("c", torch.arange(6.0))]
    stats = write_safetensors_dir(iter(tensors), tmp_path / "v1", shard_bytes=1024)
    assert stats == {"tensors": 3, "bytes": 4 * (16 + 300 + 6)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]  # no .partial left behind
    from local_engine.server import load_safetensors_dir

    loaded = load_safetensors_dir(str(tmp_path / "v1"))
    assert set(loaded) == {"a", "b", "c"} and torch.equal(loaded["c"], torch.arange(6.0))
    with pytest.raises(ValueError, match="appears twice"):
        write_safetensors_dir(iter([("a", torch.ones(1)), ("a", torch.ones(1))]), tmp_path / "v2", shard_bytes=1024)
    assert not (tmp_path / "v2").exists()  # a failed write never looks like a version


# ---------------------------------------------------------------------------------------------------------------------
# Against a stand-in vLLM: the HTTP sequence, and errors that name the remedy.
# ---------------------------------------------------------------------------------------------------------------------


async def _serve(routes) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_ipc_transfer_balances_start_and_finish_and_says_what_is_missing():
    calls = []

    def record(name, status=200):
        async def handler(request):
            calls.append((name, request.query.get("mode"), await request.text()))
            return web.json_response({}, status=status)
        return handler

    runner, url = await _serve([web.get("/health", record("health")),
                                web.post("/init_weight_transfer_engine", record("init")),
                                web.post("/pause", record("pause")), web.post("/resume", record("resume")),
                                web.post("/start_weight_update", record("start")),
                                web.post("/finish_weight_update", record("finish"))])
    try:
        transfer = VllmIpcWeightTransfer(url, timeout_s=5, control_timeout_s=5)
        await asyncio.to_thread(transfer.init_weight_transfer)
        await asyncio.to_thread(transfer.pause)
        try:
            import vllm  # noqa: F401
            has_vllm = True
        except ImportError:
            has_vllm = False
        if not has_vllm:  # this machine: the error says what to install; the update is still closed on the engine
            with pytest.raises(VllmWeightSyncError, match="needs vLLM importable"):
                await asyncio.to_thread(transfer.send_weights, iter([("w", torch.zeros(2))]))
            assert transfer.version == 0
        await asyncio.to_thread(transfer.resume)
        transfer.destroy()
    finally:
        await runner.cleanup()
    names = [c[0] for c in calls if c[0] != "health"]
    assert names[:2] == ["init", "pause"] and names[-1] == "resume"
    assert json.loads(calls[[c[0] for c in calls].index("init")][2]) == {"init_info": {}}
    assert calls[[c[0] for c in calls].index("pause")][1] == "keep"  # in-flight requests survive the sync
    assert names.count("start") == names.count("finish")


async def test_disk_transfer_errors_name_the_remedy(tmp_path):
    async def health(request):
        return web.json_response({})

    async def refuse(request):
        return web.json_response({"error": "Reloading weights failed: no such file"}, status=500)

    runner, url = await _serve([web.get("/health", health)])  # a server without the dev routes
    try:
        transfer = VllmDiskWeightTransfer(url, str(tmp_path / "a"), timeout_s=5, control_timeout_s=5)
        with pytest.raises(VllmWeightSyncError, match="VLLM_SERVER_DEV_MODE=1"):
            await asyncio.to_thread(transfer.init_weight_transfer)
        with pytest.raises(VllmWeightSyncError, match="VLLM_SERVER_DEV_MODE=1"):
            await asyncio.to_thread(transfer.pause)
    finally:
        await runner.cleanup()

    runner, url = await _serve([web.get("/health", health), web.get("/is_paused", health),
                                web.post("/collective_rpc", refuse)])
    try:
        transfer = VllmDiskWeightTransfer(url, str(tmp_path / "b"), "/engine/view", timeout_s=5,
                                          control_timeout_s=5)
        await asyncio.to_thread(transfer.init_weight_transfer)
        with pytest.raises(VllmWeightSyncError, match=r"reloading weights v1 from /engine/view/v1 .*HTTP 500.*no such"):
            await asyncio.to_thread(transfer.send_weights, iter([("w", torch.zeros(2))]))
        assert transfer.version == 0  # not loaded: the next sync writes v1 again
    finally:
        await runner.cleanup()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    transfer = VllmDiskWeightTransfer(f"http://127.0.0.1:{closed}", str(tmp_path / "c"), timeout_s=1.5)
    with pytest.raises(VllmWeightSyncError, match="not healthy after"):
        transfer.init_weight_transfer()


async def test_local_engine_reload_route_refuses_bad_requests(engine, tmp_path):
    async with ClientSession() as session:
        for body, message in (({"method": "sleep"}, "only method 'reload_weights'"),
                              ({"method": "reload_weights", "kwargs": {}}, "weights_path"),
                              ({"method": "reload_weights", "kwargs": {"weights_path": str(tmp_path)}},
                               "no .safetensors file")):
            async with session.post(f"{engine.url}/collective_rpc", json=body) as response:
                assert response.status == 400
                assert message in (await response.json())["error"]["message"]
        write_safetensors_dir(iter([("model.nope.weight", torch.zeros(2))]), tmp_path / "v1", shard_bytes=1024)
        async with session.post(f"{engine.url}/collective_rpc",
                                json={"method": "reload_weights",
                                      "kwargs": {"weights_path": str(tmp_path / "v1")}}) as response:
            assert response.status == 400
            assert "model.nope.weight" in (await response.json())["error"]["message"]


# ---------------------------------------------------------------------------------------------------------------------
# LoRA adapter sync: rollouts must sample from the adapter of the live policy version.
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_worker_samples_from_the_adapter_of_the_live_version(engine):
    from intercept_common.loop_thread import LoopThread
    from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer
    from rollout_worker.config import WorkerConfig
    from rollout_worker.serving.chat_template import resolve_training_template
    from rollout_worker.types import Task
    from rollout_worker.worker import RolloutWorker
    from tests.rollout_worker.test_worker import ScriptedAgentRunner, _drain

    asked: list[str] = []

    async def completions(request):  # what vLLM with adapters would see; forwarded as the base model
        body = await request.json()
        asked.append(body["model"])
        async with ClientSession() as session:
            async with session.post(f"{engine.url}/v1/completions", json={**body, "model": "policy"}) as answer:
                return web.json_response(await answer.json(), status=answer.status)

    async def models(request):
        async with ClientSession() as session:
            async with session.get(f"{engine.url}/v1/models") as answer:
                return web.json_response(await answer.json(), status=answer.status)

    loop = LoopThread("proxy")
    loop.start()
    runner, url = loop.run(_serve([web.post("/v1/completions", completions), web.get("/v1/models", models)]))
    tokenizer = load_qwen3_tokenizer()
    config = WorkerConfig(num_generations=2, max_inflight=2, max_groups=2, max_tokens_per_turn=8, seed=0)
    worker = RolloutWorker(config, tasks=[Task("t", "demo/repo", "0" * 40, "fix it")], episode_runner=ScriptedAgentRunner(),
                           tokenizer=tokenizer, chat_template=resolve_training_template(tokenizer), engine_url=url)
    worker.sample_from_adapters("trl-policy")
    worker.start()
    try:
        worker.update_model_version(3)
        _drain(worker, 2)
    finally:
        worker.stop()
        loop.run(runner.cleanup())
        loop.stop()
    assert asked and set(asked) == {"trl-policy-v3"}, asked


def test_the_device_script_starts_vllm_as_vllm_serve_command_says():
    """gpu/production.sh (run only on the device) must launch vLLM with the flags each mode needs."""
    import re

    from tests.paths import REPO
    from trainer.vllm_weight_sync import vllm_serve_command

    script = (REPO / "gpu" / "production.sh").read_text()
    for mode in ("nccl", "ipc", "disk", "lora"):
        line = re.search(rf"^\s+{mode}\) (flags=.*)$", script, re.M).group(1)
        expected = vllm_serve_command("m", "policy", 4096, "bfloat16", weight_sync=mode, max_staleness=0)
        for env in re.findall(r"(VLLM_[A-Z_]+=1)", expected):
            if env != "VLLM_SERVER_DEV_MODE=1":  # set for every mode
                assert env in line, (mode, env)
        for flag in ("--weight-transfer-config", "--enable-lora", "--max-lora-rank 16", "--max-loras 2",
                     "--host 127.0.0.1"):
            if flag in expected:
                assert flag in line, (mode, flag)
        if "backend" in expected:
            assert re.search(r'backend\\?":\\?"(\w+)', expected).group(1) == mode
            assert f'"backend":"{mode}"' in line
    assert "envs=(VLLM_SERVER_DEV_MODE=1)" in script


def test_the_worker_follows_trls_adapter_decision_and_lora_insists_on_it():
    from types import SimpleNamespace

    from intercept_common.cli_errors import one_line
    from trainer.components import follow_adapter_sync

    class Worker:
        prefix = None

        def sample_from_adapters(self, prefix):
            self.prefix = prefix

    adapters = SimpleNamespace(_lora_sync=True, _lora_name="trl-policy")
    merged = SimpleNamespace(_lora_sync=False, _lora_name="trl-policy")
    for mode in ("nccl", "lora"):  # TRL decides by itself, also under nccl
        worker = Worker()
        follow_adapter_sync(adapters, worker, SimpleNamespace(vllm_weight_sync=mode, vllm_url="http://v"))
        assert worker.prefix == "trl-policy"
    worker = Worker()
    follow_adapter_sync(merged, worker, SimpleNamespace(vllm_weight_sync="nccl", vllm_url="http://v"))
    assert worker.prefix is None
    with pytest.raises(VllmWeightSyncError) as refused:
        follow_adapter_sync(merged, Worker(), SimpleNamespace(vllm_weight_sync="lora", vllm_url="http://v"))
    # the CLI prints it as one line with the remedy
    line = one_line(refused.value)
    assert line is not None and "--enable-lora" in line and "VLLM_ALLOW_RUNTIME_LORA_UPDATING=1" in line


async def test_a_failed_ipc_send_still_finishes_the_update_and_reports_the_send(monkeypatch):
    """vLLM cannot run here: a stand-in of its ipc_engine module whose producer fails mid-send. The update is still
    finished on the engine (vLLM refuses a second start otherwise), and the error raised is the send's, not the
    finish's (the stand-in engine also fails the finish)."""
    import sys
    import types

    calls = []

    async def record(request):
        calls.append(request.path)
        return web.json_response({}, status=500 if request.path == "/finish_weight_update" else 200)

    class FailingProducer:
        @staticmethod
        def trainer_send_weights(iterator, trainer_args):
            assert trainer_args == {"send_mode": "http", "url": url, "packed": True}
            next(iterator)
            raise RuntimeError("cudaIpcGetMemHandle failed")

    module = types.ModuleType("vllm.distributed.weight_transfer.ipc_engine")
    module.IPCWeightTransferEngine = FailingProducer
    for name in ("vllm", "vllm.distributed", "vllm.distributed.weight_transfer"):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name) or types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "vllm.distributed.weight_transfer.ipc_engine", module)
    runner, url = await _serve([web.post("/start_weight_update", record), web.post("/finish_weight_update", record)])
    try:
        transfer = VllmIpcWeightTransfer(url, timeout_s=5, control_timeout_s=5)
        with pytest.raises(VllmWeightSyncError, match="cudaIpcGetMemHandle failed"):
            await asyncio.to_thread(transfer.send_weights, iter([("w", torch.zeros(2)), ("v", torch.ones(2))]))
        assert calls == ["/start_weight_update", "/finish_weight_update"] and transfer.version == 0
        transfer.destroy()
    finally:
        await runner.cleanup()
