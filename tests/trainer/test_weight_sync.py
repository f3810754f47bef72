"""Weight sync to the local engine (trainer/weight_transfer.py): F2 — after every sync the engine's logprobs on a fixed
probe equal the trainer's within 1e-4 (fp32), full fine-tune and LoRA (merged weights under base names); plus the
error paths of `LocalEngineWeightTransfer`."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import torch
from aiohttp import web

from trainer.vllm_weight_sync import vllm_serve_command
from trainer.weight_transfer import LocalEngineWeightTransfer, WeightTransferError


def _train_args(model_dir, output_dir, *extra):
    from trainer.config import parse_train_args
    from trainer.train_swe_async_grpo import TrainArgs

    script, training = parse_train_args([
        "--model-name-or-path", str(model_dir), "--output-dir", str(output_dir), "--report-to", "none",
        "--save-strategy", "no", "--token-budget", "128", "--num-generations", "4", "--temperature", "1.0",
        "--max-staleness", "2", "--seed", "0", "--dtype", "float32", "--bf16", "false", *extra,
    ])
    return TrainArgs(script, training)


@pytest.mark.slow
@pytest.mark.parametrize("use_peft", [False, True], ids=["full", "lora"])
def test_engine_matches_trainer_after_every_sync(engine, tiny_model_dir, tmp_path, use_peft):
    from transformers import AutoTokenizer

    from tests.trainer.test_trainer_helpers import PROMPTS, EngineSampleWorker, ProbingWeightTransfer
    from trainer.train_swe_async_grpo import build_trainer

    steps = 3
    extra = ["--max-steps", str(steps), "--learning-rate", "3e-3" if use_peft else "1e-3"]
    if use_peft:
        extra += ["--use-peft", "--lora-r", "8", "--lora-alpha", "16", "--lora-target-modules", "q_proj", "v_proj",
                  "up_proj"]
    args = _train_args(tiny_model_dir, tmp_path / "out", *extra)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    probe_prompt = tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True, tokenize=True,
                                                 return_dict=False)
    worker = EngineSampleWorker(engine.url, tokenizer, num_generations=4, max_tokens=12)
    transfer = ProbingWeightTransfer(engine.url, probe_prompt)
    trainer = build_trainer(args, worker, transfer)
    transfer.model = trainer.model
    assert type(trainer.model).__name__ == ("PeftModelForCausalLM" if use_peft else "Qwen3ForCausalLM")
    trainer.train()

    print(f"F2 {'lora' if use_peft else 'full'}: max |engine - trainer| per sync:",
          [f"{p['max_abs_diff']:.2e}" for p in transfer.probes], "push:", transfer.last_push)
    # One cold sync at train begin, then one per step (weight_sync_steps=1).
    assert len(transfer.probes) == steps + 1
    assert worker.versions_seen == list(range(1, steps + 2))
    for probe in transfer.probes:
        assert probe["engine_version"] == probe["version"]
        assert probe["max_abs_diff"] <= 1e-4, probe
    # The comparison means something only if the weights really moved between syncs.
    first, last = transfer.probes[0], transfer.probes[-1]
    ids = first["ids"]
    assert last["ids"] != ids or (last["engine"] - first["engine"]).abs().max() > 1e-3

    base_names = set(dict(trainer.model.named_parameters()) if not use_peft else
                     dict(trainer.model.get_base_model().named_parameters()))
    for names in transfer.pushed_names:
        assert not any("lora_" in n or "base_model" in n or "base_layer" in n for n in names), names
        assert "model.layers.0.self_attn.q_proj.weight" in names
    if use_peft:
        # The engine got base-model names with the adapter MERGED in: exactly the merged model's weights.
        merged_names = {n.replace("base_model.model.", "").replace(".base_layer", "") for n in base_names
                        if "lora_" not in n}
        assert set(transfer.pushed_names[-1]) == merged_names
        lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
        assert lora_b and max(float(p.abs().max()) for p in lora_b) > 0, "the adapter never trained"
        merged = trainer.model.merge_and_unload()
        from tests.trainer.test_trainer_helpers import engine_complete, trainer_logprobs

        ids, engine_lp = engine_complete(engine.url, probe_prompt, max_tokens=16, temperature=1.0, seed=99)
        ours = trainer_logprobs(merged, probe_prompt + ids)[len(probe_prompt) - 1:]
        torch.testing.assert_close(torch.tensor(engine_lp), ours, atol=1e-4, rtol=0)
    else:
        assert set(transfer.pushed_names[-1]) == base_names


# ---------------------------------------------------------------------------------------------------------------------
# Error paths: a failing engine must stop training with a clear error, never hang or drift silently.
# ---------------------------------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_engine_fails_fast_with_a_clear_error():
    transfer = LocalEngineWeightTransfer(f"http://127.0.0.1:{_closed_port()}", timeout_s=1.0, control_timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(WeightTransferError, match="not healthy"):
        transfer.init_weight_transfer()
    with pytest.raises(WeightTransferError, match="pause of the local engine"):
        transfer.pause()
    with pytest.raises(WeightTransferError, match="pushing weights version 1"):
        transfer.send_weights(iter([("w", torch.zeros(2))]))
    assert transfer.version == 0  # a failed push does not advance the version
    assert time.monotonic() - start < 10
    transfer.destroy()


async def test_engine_refusals_surface_the_engine_message():
    """A stand-in engine that refuses pause and weights: the engine's own message reaches the error."""
    seen = {}

    async def pause(request):
        return web.json_response({"error": {"message": "engine is draining", "type": "Busy"}}, status=503)

    async def update(request):
        seen["version"] = request.query["version"]
        return web.json_response({"error": {"message": "unknown tensor 'w'", "type": "BadRequest"}}, status=400)

    async def health(request):
        return web.json_response({})

    app = web.Application()
    app.add_routes([web.post("/pause", pause), web.post("/update_weights", update), web.get("/health", health)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        transfer = LocalEngineWeightTransfer(f"http://127.0.0.1:{port}", timeout_s=5, control_timeout_s=5)
        await asyncio.to_thread(transfer.init_weight_transfer)
        with pytest.raises(WeightTransferError, match="HTTP 503: .*engine is draining"):
            await asyncio.to_thread(transfer.pause)
        with pytest.raises(WeightTransferError, match="unknown tensor 'w'"):
            await asyncio.to_thread(transfer.send_weights, iter([("w", torch.zeros(2))]))
        assert seen["version"] == "1"
        transfer.destroy()
    finally:
        await runner.cleanup()


def test_vllm_serve_command_carries_what_trl_needs():
    command = vllm_serve_command("Qwen/Qwen3-8B", "policy", 32768, "bfloat16", port=8001, tensor_parallel_size=2)
    for part in ("VLLM_SERVER_DEV_MODE=1 vllm serve Qwen/Qwen3-8B", "--served-model-name policy",
                 "--weight-transfer-config '{\"backend\":\"nccl\"}'", "--logprobs-mode processed_logprobs",
                 "--max-model-len 32768", "--dtype bfloat16", "--port 8001", "--tensor-parallel-size 2"):
        assert part in command



def test_vllm_serve_command_per_weight_sync_mode():
    ipc = vllm_serve_command("m", "policy", 4096, "bfloat16", weight_sync="ipc")
    assert "--weight-transfer-config '{\"backend\":\"ipc\"}'" in ipc
    # vLLM unpickles the IPC handles: only with the flag, and only on loopback
    assert "VLLM_ALLOW_INSECURE_SERIALIZATION=1" in ipc and "--host 127.0.0.1" in ipc
    assert "--gpu-memory-utilization" in ipc  # the trainer shares the GPU
    disk = vllm_serve_command("m", "policy", 4096, "bfloat16", weight_sync="disk")
    assert "--weight-transfer-config" not in disk and "VLLM_SERVER_DEV_MODE=1" in disk
    lora = vllm_serve_command("m", "policy", 4096, "bfloat16", weight_sync="lora", lora_rank=12, max_staleness=1)
    # TRL refuses a server with fewer than max_staleness + 2 adapter slots or a smaller max rank
    for part in ("VLLM_ALLOW_RUNTIME_LORA_UPDATING=1", "--enable-lora", "--max-lora-rank 16", "--max-loras 3"):
        assert part in lora
    with pytest.raises(ValueError):
        vllm_serve_command("m", "policy", 4096, "bfloat16", weight_sync="shm")


@pytest.mark.slow
def test_replicated_sync_gives_every_replica_the_version_before_any_resumes(engine, tiny_model_dir):
    """`train --engine-replicas 2`'s transfer (trainer.weight_transfer.ReplicatedWeightTransfer): both real engines
    are paused, get the same tensors from one pass of the iterator, hold the new version, and then sample alike."""
    from transformers import AutoModelForCausalLM

    from intercept_common.engine_process import LocalEngineProcess
    from local_engine.client import get_weights_version
    from tests.trainer.test_trainer_helpers import engine_complete
    from trainer.weight_transfer import ReplicatedWeightTransfer

    probe = list(range(1000, 1040))
    with LocalEngineProcess(str(tiny_model_dir), served_model_name="policy", max_model_len=4096) as second:
        urls = [engine.url, second.url]
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        torch.manual_seed(0)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.05 * torch.randn_like(param))
        transfer = ReplicatedWeightTransfer([LocalEngineWeightTransfer(url) for url in urls])
        transfer.version = max(get_weights_version(url) for url in urls)  # the module's engine may hold some already
        before = engine_complete(second.url, probe, max_tokens=4, temperature=1.0, seed=3)
        passes = []

        def once():  # TRL's iterator: one pass only
            passes.append(1)
            yield from model.named_parameters()

        transfer.init_weight_transfer()
        transfer.pause()
        transfer.send_weights(once())
        transfer.resume()
        transfer.destroy()
        assert passes == [1]
        assert [get_weights_version(url) for url in urls] == [transfer.version] * 2
        after = [engine_complete(url, probe, max_tokens=4, temperature=1.0, seed=3) for url in urls]
        assert after[0] == after[1], after  # the same weights on both replicas: same ids, same logprobs
        assert after[1] != before  # and they moved
