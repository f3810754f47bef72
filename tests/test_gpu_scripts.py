"""CPU-side checks of the scripts in gpu/ (they run on a lent GPU box; CI has none): they import, parse their
arguments, the shell drivers parse, the tree-attention bench is exact at a toy size, and vLLM 0.26's real overlong
400 (recorded on the GPU box, docs/gpu.md) becomes our PromptTooLongError with both numbers. The production path's
helpers (probe, gate-vs-raw bench, summary) parse their arguments and compute what docs/gpu.md quotes from fixtures."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from aiohttp import web

from rollout_worker.serving.engine_client import EngineClient
from rollout_worker.protocols import PromptTooLongError
from tests.paths import REPO

GPU_DIR = REPO / "gpu"
SCRIPTS = ["build_model", "check_vllm_engine", "check_vllm_rollout", "bench_tree_attention", "bench_trainer"]

# vLLM 0.26.0's answer to a 2058-token prompt with max_tokens=8 and --max-model-len 2048, verbatim (H100, 2026-11-22).
VLLM_026_OVERLONG = {"error": {
    "message": "This model's maximum context length is 2048 tokens. However, you requested 8 output tokens and your "
               "prompt contains 2058 input tokens, for a total of 2066 tokens. Please reduce the length of the input "
               "prompt or the number of requested output tokens. (parameter=input_tokens, value=2058)",
    "type": "BadRequestError", "param": "input_tokens", "code": 400}}


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", GPU_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_imports_without_a_gpu_and_parses_its_arguments(name):
    module = load(name)
    parser = module.build_parser()
    argv = {"build_model": ["--variant", "wide"], "bench_tree_attention": ["--group", "2"],
            "bench_trainer": ["--variants", "qwen3-1.7b", "qwen3-8b", "--seq-lens", "8192", "16384"]}.get(
        name, ["--model-dir", "/m", "--dtype", "bfloat16"])
    args = parser.parse_args(argv)
    assert args is not None and callable(module.main)
    with pytest.raises(SystemExit):  # a required or constrained argument is refused, not ignored
        parser.parse_args(["--dtype", "fp8"] if name.startswith("check") else ["--variant", "huge"]
                          if name == "build_model" else ["--group", "two"])


@pytest.mark.parametrize("script", ["setup_and_start.sh", "run_checks.sh", "production.sh"])
def test_shell_drivers_parse(script):
    result = subprocess.run(["bash", "-n", str(GPU_DIR / script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_tree_attention_bench_is_exact_at_toy_size_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(GPU_DIR / "bench_tree_attention.py"), "--device", "cpu", "--prompt-len", "24",
         "--completion-len", "6", "--group", "3", "--heads", "4", "--kv-heads", "2", "--head-dim", "8",
         "--repeats", "1", "--dtypes", "float32", "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    # TRL's packer stores the shared 24-token prompt once for the group of 3 (plus a few boundary tokens).
    assert report["unpacked_tokens"] == 3 * (24 + 6)
    assert report["packed_tokens"] < report["unpacked_tokens"] - 2 * 24 + 6
    fp32 = report["by_dtype"]["float32"]
    assert fp32["max_abs_diff_completion"] < 1e-5 and fp32["max_abs_diff_prompt"] < 1e-5
    for candidate in fp32["candidates"].values():
        assert candidate["max_abs_diff_vs_unpacked"] < 1e-5


def test_trainer_bench_runs_the_trainers_step_at_toy_size_on_cpu(tmp_path):
    """gpu/bench_trainer.py on CPU with a toy Qwen3: TRL's packing, tree attention, fused head and the PPO loss run,
    checkpointing on and off give the same log-probs, and the profile and optimizer parts report."""
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(GPU_DIR / "bench_trainer.py"), "--device", "cpu", "--variants", "toy", "--vocab", "500",
         "--seq-lens", "48", "--row-tokens", "200", "--group", "2", "--checkpointing", "on", "off", "--warmup", "0",
         "--repeats", "1", "--profile", "--optimizer", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    on, off = report["results"]
    assert (on["checkpointing"], off["checkpointing"]) == ("on", "off")
    # Two groups of two 48-token samples, each group's 12-token prompt forwarded once (plus TRL's fork token).
    assert on["samples"] == 4 and on["row_tokens"] < 4 * 48 and on["trained_tokens"] == 4 * 36
    assert on["tokens_per_s"] > 0 and on["mfu_pct"] is None  # no peak FLOPs for a CPU
    assert report["logprob_max_abs_diff_vs_tree"] == {"toy/seq48/row200/tree/ckpt-off": 0.0}
    assert report["profile"]["config"]["checkpointing"] == "on" and "gpu_busy_frac" in report["profile"]
    assert report["optimizer_ms"]["toy"] > 0


async def test_vllm_026_overlong_answer_becomes_prompt_too_long_with_both_numbers():
    async def completions(request):
        await request.json()
        return web.json_response(VLLM_026_OVERLONG, status=400)

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with EngineClient(f"http://127.0.0.1:{port}/v1", "policy", timeout_s=10) as client:
            with pytest.raises(PromptTooLongError) as caught:
                await client.complete([1] * 2058, max_tokens=8)
    finally:
        await runner.cleanup()
    assert caught.value.status == 400
    assert caught.value.prompt_tokens == 2058 and caught.value.max_model_len == 2048


def test_setup_and_start_caps_flex_attention_blocks_for_float32_unless_told_otherwise():
    script = (GPU_DIR / "setup_and_start.sh").read_text()
    assert 'VLLM_EXTRA="--num-gpu-blocks-override 1024 --max-num-seqs 32"' in script
    assert '"$dtype" == float32 && -z "${VLLM_EXTRA+set}"' in script  # an explicit VLLM_EXTRA (even empty) wins


def test_qwen3_1_7b_variant_has_the_real_architecture_size():
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    module = load("build_model")
    assert module.build_parser().parse_args(["--variant", "qwen3-1.7b"]).variant == "qwen3-1.7b"
    with torch.device("meta"):
        model = Qwen3ForCausalLM(Qwen3Config(vocab_size=151936, **module.QWEN3_1_7B))
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 2) == 1.72  # Qwen3-1.7B, tied embeddings


def test_probe_weights_compare_reports_every_pair(tmp_path):
    module = load("probe_weights")
    ids = module.probe_ids(2, 8, seed=0)
    assert ids == module.probe_ids(2, 8, seed=0) and len(ids) == 2 and all(len(x) == 8 for x in ids)
    files = []
    for label, shift in (("a", 0.0), ("b", 0.01), ("c", 1.0)):
        path = tmp_path / f"{label}.json"
        path.write_text(json.dumps({"label": label, "logprobs": [[-1.0 + shift, -2.0], [-3.0, -4.0 - shift]]}))
        files.append(str(path))
    out = tmp_path / "cmp.json"
    assert module.main(["compare", *files, "--out", str(out)]) == 0
    pairs = json.loads(out.read_text())["pairs"]
    assert set(pairs) == {"a vs b", "a vs c", "b vs c"}
    assert pairs["a vs b"]["max_abs_diff"] == pytest.approx(0.01)
    assert pairs["a vs c"]["mean_abs_diff"] == pytest.approx(0.5)
    with pytest.raises(SystemExit):
        module.build_parser().parse_args(["hf", "--out", "x.json"])  # --model-dir is required


def test_gate_vs_raw_bench_parses_its_arguments():
    module = load("bench_gate_vs_raw")
    args = module.build_parser().parse_args(["--model-dir", "/m", "--concurrency", "8"])
    assert args.modes == ["raw", "raw-tokens", "gated", "raw-tokens", "raw"] and args.concurrency == 8
    assert args.deadline_s <= 200  # production.sh runs it under `timeout 240`
    with pytest.raises(SystemExit):
        module.build_parser().parse_args(["--model-dir", "/m", "--modes", "direct"])


def test_gate_vs_raw_bench_runs_every_mode_against_the_local_engine(engine, tiny_model_dir, tmp_path):
    """The bench end to end at a toy size: the local engine has no chat route, so `raw` is skipped with its reason;
    raw-tokens and gated run the same traffic (same rendered prompts), and gated pairs every turn with the engine
    latency its worker measured."""
    module = load("bench_gate_vs_raw")
    out = tmp_path / "gate_vs_raw.json"
    assert module.main(["--url", engine.url, "--model-dir", str(tiny_model_dir), "--concurrency", "4",
                        "--rollouts", "8", "--group", "4", "--turns", "2", "--max-tokens", "8",
                        "--modes", "raw", "raw-tokens", "gated", "--timeout-s", "60", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    raw, tokens, gated = report["runs"]
    assert raw["mode"] == "raw" and "/v1/chat/completions" in raw["skipped"]
    for run in (tokens, gated):
        assert run["turns"] == 8 * 2 and run["errors"] == 0 and not run["timed_out"], run
        assert run["sampled_tokens"] > 0 and run["tokens_per_s"] > 0
        assert run["engine_latency_s"]["n"] == 16 and run["overhead_s"]["n"] == 16
        assert run["loop_stalls"]["agents"]["max_lag_ms"] >= 0 and "cpu_ms_per_turn" in run and "gc" in run
    # The very prompts the worker renders: equal first turns (later ones hold different sampled replies).
    assert tokens["prompt_tokens_mean_by_turn"][0] == gated["prompt_tokens_mean_by_turn"][0] > 0
    assert tokens["forks"] == gated["forks"] == 0
    assert gated["records"] == 8 and gated["rollouts_without_engine_latency"] == 0
    assert gated["turn_server_overhead_s"]["n"] == 16 and "worker" in gated["loop_stalls"]
    ratios = report["summary"]["ratios"]
    assert set(ratios) == {"gated/raw-tokens"} and ratios["gated/raw-tokens"]["tokens_per_s"] > 0
    assert "target_met" not in report["summary"]  # no raw run: the target cannot be judged


def test_summarize_production_reads_step_logs_rollouts_and_reports(tmp_path):
    module = load("summarize_production")
    (tmp_path / "train.log").write_text(
        "INFO noise\n"
        "{'loss': 0.01, 'ratio': 1.002, 'kl': 0.0004, 'perf/weight_sync_s': 1.5, 'perf/mfu_fwd_bwd': 21.0}\n"
        "2026 INFO trl: Weight sync: done. Total 1.5s\n"
        "{'loss': 0.02, 'ratio': 0.998, 'kl': 0.0005, 'perf/weight_sync_s': 1.2}\n"
        "{'train_runtime': 60.0, 'train_loss': 0.015}\n")
    (tmp_path / "rollouts.jsonl").write_text("\n".join(json.dumps(
        {"status": "completed", "turns": 1, "reward": 0.0, "drift": {"sampled_tokens": 512},
         "timings": {"sandbox_setup": 0.5, "agent": 3.0, "grading": 1.5, "total": 5.0}}) for _ in range(4)))
    (tmp_path / "sync_proof.json").write_text(json.dumps({"pairs": {"a vs b": {"max_abs_diff": 0.1}}}))
    out = tmp_path / "summary.json"
    assert module.main(["--work", str(tmp_path), "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert [step["ratio"] for step in summary["steps"]] == [1.002, 0.998]
    assert summary["steps"][0]["perf/mfu_fwd_bwd"] == 21.0
    assert summary["weight_sync_lines"] == ["done. Total 1.5s"]
    assert summary["rollouts"]["rollouts"] == 4 and summary["rollouts"]["sampled_tokens"] == 2048
    assert summary["rollouts"]["share_agent"] == pytest.approx(0.6)
    assert summary["sync_proof"] == {"a vs b": {"max_abs_diff": 0.1}}


def test_summarize_production_reads_the_metric_lines_the_progress_reporter_logs(tmp_path, caplog):
    """`intercept-rl train` prints only a progress line per step; the full metric dict goes to the run's log file,
    where the device summary must find it (the one-GPU runs of 2026-11-30 lost their perf/* figures without it)."""
    import logging

    from trainer.progress import make_progress_callback

    reporter = make_progress_callback(show_bar=False)
    state = type("State", (), {"is_world_process_zero": True, "global_step": 3, "max_steps": 4})()
    logs = {"loss": 0.0, "ratio": 0.999, "kl": 5e-4, "perf/weight_sync_s": 0.41, "perf/mfu_fwd_bwd": 12.5,
            "flag": True}
    with caplog.at_level(logging.INFO, logger="trainer.progress"):
        reporter.on_log(None, state, None, logs=logs)
    (tmp_path / "run_train.log").write_text(
        "\n".join(f"2026-11-30 INFO {r.name}: {r.getMessage()}" for r in caplog.records) + "\n")
    out = tmp_path / "summary.json"
    assert load("summarize_production").main(["--work", str(tmp_path), "--out", str(out)]) == 0
    steps = json.loads(out.read_text())["steps"]
    assert steps == [{"loss": 0.0, "ratio": 0.999, "kl": 5e-4, "perf/weight_sync_s": 0.41, "perf/mfu_fwd_bwd": 12.5}]


def test_fsdp2_x4_run_is_prepared_on_cpu():
    """What the 4-GPU FSDP2 run needs that a CPU can check: accelerate parses the FSDP2 config, the 8B variant has
    the real size, and the driver launches the trainer with it on three GPUs next to vLLM on the fourth."""
    import torch
    from accelerate.commands.config.config_args import load_config_from_file
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = load_config_from_file(str(GPU_DIR.parent / "trainer" / "accelerate_fsdp2.yaml"))
    assert config.distributed_type == "FSDP" and config.fsdp_config["fsdp_version"] == 2
    assert config.mixed_precision == "bf16" and config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    module = load("build_model")
    with torch.device("meta"):
        model = Qwen3ForCausalLM(Qwen3Config(vocab_size=151936, **module.QWEN3_8B))
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 1) == 8.2  # Qwen3-8B, untied embeddings
    driver = (GPU_DIR / "fsdp2_x4.sh").read_text()
    assert 'VLLM_GPU="${VLLM_GPU:-3}" TRAIN_GPU="${TRAIN_GPU:-0,1,2}" TRAIN_PROCS="${TRAIN_PROCS:-3}"' in driver
    production = (GPU_DIR / "production.sh").read_text()
    assert ('launcher=(accelerate launch --config_file trainer/accelerate_fsdp2.yaml --num_processes "$TRAIN_PROCS")'
            in production)


def test_modal_recipe_serves_vllm_with_the_training_flags(monkeypatch):
    """gpu/modal_vllm.py cannot run here (Modal is unreachable): a stand-in `modal` module records what the recipe
    declares, and its vLLM argv must carry every flag `vllm_serve_command` renders for the HTTP-only modes."""
    import sys
    import types

    from trainer.vllm_weight_sync import vllm_serve_command

    declared = {}

    class Chain:
        def __getattr__(self, name):
            return lambda *args, **kwargs: self

    fake = types.ModuleType("modal")
    fake.Image = types.SimpleNamespace(from_registry=lambda *a, **k: Chain())
    fake.Volume = types.SimpleNamespace(from_name=lambda name, **k: name)
    fake.App = lambda name: types.SimpleNamespace(function=lambda **k: declared.setdefault("function", k) and (
        lambda f: f))
    fake.concurrent = lambda **k: (lambda f: f)
    fake.web_server = lambda **k: declared.setdefault("web_server", k) and (lambda f: f)
    monkeypatch.setitem(sys.modules, "modal", fake)
    for mode in ("lora", "disk"):
        monkeypatch.setenv("INTERCEPT_RL_WEIGHT_SYNC", mode)
        monkeypatch.setenv("INTERCEPT_RL_MAX_STALENESS", "1")
        declared.clear()
        module = load("modal_vllm")
        argv = module.serve_argv()
        expected = vllm_serve_command(module.MODEL, "policy", module.MAX_MODEL_LEN, module.DTYPE, port=8000,
                                      weight_sync=mode, lora_rank=module.LORA_RANK, max_staleness=1)
        for flag in ("--served-model-name policy", "--logprobs-mode processed_logprobs", "--enable-lora",
                     "--max-lora-rank 16", "--max-loras 3", f"--max-model-len {module.MAX_MODEL_LEN}"):
            assert (flag in expected) == (flag in " ".join(argv)), (mode, flag)
        for env in ("VLLM_SERVER_DEV_MODE", "VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
            assert (f"{env}=1" in expected) == (module.ENV.get(env) == "1"), (mode, env)
        # the dev routes are remote control: never without Modal's proxy auth
        assert declared["web_server"]["requires_proxy_auth"] is True
        assert "/weights" in declared["function"]["volumes"]
    monkeypatch.setenv("INTERCEPT_RL_WEIGHT_SYNC", "nccl")
    with pytest.raises(SystemExit, match="disk or lora"):
        load("modal_vllm")


def test_production_serves_eager_by_default_and_benches_with_logprobs_on_both_sides():
    """production.sh: vLLM keeps --enforce-eager unless VLLM_EAGER=0 (CUDA graphs, docs/gpu.md 2026-12-07), and the
    bench stage compares gated with raw chat that pays for logprobs too, unless RAW_LOGPROBS=0."""
    script = (GPU_DIR / "production.sh").read_text()
    assert "local eager=(--enforce-eager)" in script
    assert '[[ "${VLLM_EAGER:-1}" == 0 ]] && eager=()' in script and '"${eager[@]}"' in script
    assert 'if [[ "$stage" == bench ]]' in script
    assert '[[ "${RAW_LOGPROBS:-1}" == 1 ]] && logprobs=(--raw-logprobs)' in script
    module = load("bench_gate_vs_raw")
    args = module.build_parser().parse_args(["--model-dir", "/m", "--modes", "raw", "gated", "raw", "gated",
                                             "--raw-logprobs", "--deadline-s", "130"])
    assert args.raw_logprobs and args.modes == ["raw", "gated", "raw", "gated"]
