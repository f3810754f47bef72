"""CPU-side checks of the scripts in gpu/ (they run on a lent GPU box; CI has none): they import, parse their
arguments, the shell drivers parse, the tree-attention bench is exact at a toy size, and vLLM 0.26's real overlong
400 (recorded on the GPU box, docs/gpu.md) becomes our PromptTooLongError with both numbers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from rollout_worker.engine_client import EngineClient, PromptTooLongError

GPU_DIR = Path(__file__).resolve().parent.parent / "gpu"
SCRIPTS = ["build_model", "check_vllm_engine", "check_vllm_rollout", "bench_tree_attention"]

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
    argv = {"build_model": ["--variant", "wide"], "bench_tree_attention": ["--group", "2"]}.get(
        name, ["--model-dir", "/m", "--dtype", "bfloat16"])
    args = parser.parse_args(argv)
    assert args is not None and callable(module.main)
    with pytest.raises(SystemExit):  # a required or constrained argument is refused, not ignored
        parser.parse_args(["--dtype", "fp8"] if name.startswith("check") else ["--variant", "huge"]
                          if name == "build_model" else ["--group", "two"])


@pytest.mark.parametrize("script", ["setup_and_start.sh", "run_checks.sh"])
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
