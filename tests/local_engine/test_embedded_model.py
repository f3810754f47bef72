"""The embedded tiny model: deterministic build, atomic cache, offline loading; and `intercept-rl engine` as a real
subprocess on it (start, serve, stop on SIGTERM, clear failure on a bad model path)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
import requests
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.chat_template_utils import qwen3_chat_template

from local_engine.embedded import TINY_MODEL_NAME, ensure_tiny_model
from tests.paths import REPO


@pytest.fixture(scope="module")
def cached_dir():
    return ensure_tiny_model()


def test_two_builds_give_identical_weights(tmp_path, cached_dir):
    before = torch.random.get_rng_state()
    fresh = ensure_tiny_model(tmp_path)
    assert torch.equal(torch.random.get_rng_state(), before)  # the build used a private RNG
    assert fresh == tmp_path / "models" / TINY_MODEL_NAME and fresh != cached_dir
    a, b = load_file(fresh / "model.safetensors"), load_file(cached_dir / "model.safetensors")
    assert sorted(a) == sorted(b) and len(a) > 10
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert a["model.embed_tokens.weight"].std() > 0.01  # really initialised, not zeros
    # Reused, not rebuilt: the second call returns at once and leaves the files untouched.
    stamp = (fresh / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model(tmp_path) == fresh and (fresh / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in fresh.parent.iterdir()] == [TINY_MODEL_NAME]  # no staging directory left behind


def test_cache_root_follows_the_environment(tmp_path, monkeypatch, cached_dir):
    monkeypatch.setenv("INTERCEPT_RL_CACHE", str(tmp_path / "elsewhere"))
    (tmp_path / "elsewhere" / "models").mkdir(parents=True)
    os.symlink(cached_dir, tmp_path / "elsewhere" / "models" / TINY_MODEL_NAME)  # reuse, no second build
    assert ensure_tiny_model() == tmp_path / "elsewhere" / "models" / TINY_MODEL_NAME


def test_loads_offline_with_the_specified_architecture(cached_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = AutoModelForCausalLM.from_pretrained(cached_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(cached_dir, local_files_only=True)
    c = model.config
    assert type(model).__name__ == "Qwen3ForCausalLM" and model.dtype == torch.float32
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
            c.intermediate_size, c.vocab_size, c.max_position_embeddings) == (64, 2, 4, 2, 16, 128, 151936, 4096)
    assert c.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tokenizer.chat_template == qwen3_chat_template and len(tokenizer) == 151669
    assert model.generation_config.eos_token_id == [151645, 151643]
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), 151936) and torch.isfinite(logits).all()


def _start_engine(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "intercept_rl_cli", "engine", *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


@pytest.mark.slow  # a fresh interpreter importing torch + transformers: ~15-35 s on a shared 2-core box
def test_cli_serves_a_model_directory_and_stops_on_sigterm(cached_dir):
    proc = _start_engine("--model", str(cached_dir), "--port", "0", "--served-model-name", "policy",
                         "--max-model-len", "128", "--seed", "3")
    try:
        url = None
        for line in proc.stdout:  # model loading takes a few seconds; the pytest timeout bounds this loop
            match = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
            if match:
                url = match.group(1)
                break
        assert url, "the engine never printed its URL"
        card = requests.get(f"{url}/v1/models", timeout=10).json()["data"][0]
        assert card["id"] == "policy" and card["max_model_len"] == 128
        answer = requests.post(f"{url}/v1/completions", timeout=60, json={
            "model": "policy", "prompt": [1, 2, 3], "max_tokens": 4, "logprobs": 0, "return_token_ids": True})
        assert len(answer.json()["choices"][0]["token_ids"]) == 4
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        proc.stdout.close()


def test_cli_refuses_a_missing_model_directory(tmp_path):
    proc = _start_engine("--model", str(tmp_path / "nope"), "--port", "0")
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == 2 and "is not a model directory" in out
