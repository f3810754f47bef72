"""The embedded tiny model: a random-init Qwen3 with the real Qwen3 tokenizer, built once and cached (design §6).

It cannot solve anything; it exists so that the whole machinery (engine, worker, trainer) runs on a CPU box with no
download. The build is deterministic (fixed seed, fixed config), so every machine gets bit-identical weights and a
test can rebuild them to compare.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer

logger = logging.getLogger(__name__)

TINY_MODEL_NAME = "tiny-qwen3-v1"  # bump the suffix whenever the recipe below changes: caches are keyed by it
# The same weights with 65,536 positions: real agent CLIs send 8k-19k tokens before their first turn (docs/agents.md).
# RoPE has no weights, so only config.json differs from tiny-qwen3-v1 (tests/e2e/test_agents_rollouts.py checks it).
TINY_LONG_MODEL_NAME = "tiny-qwen3-64k-v1"
LONG_CONTEXT_POSITIONS = 65536
TINY_MODEL_SEED = 20260601
CACHE_ENV = "INTERCEPT_RL_CACHE"


def default_cache_root() -> Path:
    """`$INTERCEPT_RL_CACHE`, else `~/.cache/intercept-rl`."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "intercept-rl"


def tiny_model_config(tokenizer) -> Qwen3Config:
    """The fixed architecture of the embedded model; every field that affects the weights is spelled out."""
    return Qwen3Config(
        vocab_size=151936,  # Qwen3's embedding size (the tokenizer has 151669 ids; the rest is padding, as upstream)
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        initializer_range=0.02,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        torch_dtype="float32",
    )


def build_tiny_model(target: Path, **config_overrides) -> None:
    """Write the tiny model and its tokenizer into the (new or empty) directory `target`.

    `config_overrides` change the Qwen3 config of the recipe. `initializer_range`: the default (0.02) gives a
    near-uniform next-token distribution over the 152k vocabulary; a larger one (e.g. 0.5) gives a random model with
    peaked distributions, whose sampled tokens recur often enough for a few dozen GRPO steps to move a reward (the
    learning benchmark uses it). Sizes (`hidden_size`, `num_hidden_layers`, …) give wider models (gpu/build_model.py).
    """
    tokenizer = load_qwen3_tokenizer()
    config = tiny_model_config(tokenizer)
    for name, value in config_overrides.items():
        setattr(config, name, value)
    if "num_hidden_layers" in config_overrides and "layer_types" not in config_overrides:
        config.layer_types = ["full_attention"] * config.num_hidden_layers  # derived at init from the old depth
    # A private RNG scope: the build must not depend on, nor disturb, the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_MODEL_SEED)
        model = Qwen3ForCausalLM(config).to(torch.float32).eval()
    im_end, endoftext = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    # Both of Qwen3's end tokens end a generation, as in the upstream instruct models' generation_config.json.
    model.generation_config = GenerationConfig(
        bos_token_id=endoftext, eos_token_id=[im_end, endoftext], pad_token_id=endoftext, do_sample=True
    )
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)  # carries TRL's qwen3.jinja as chat_template


def ensure_tiny_model(cache_dir: str | os.PathLike | None = None, *, long_context: bool = False) -> Path:
    """Path of the embedded tiny model (`embedded`, or `embedded-64k` with `long_context`), built on first use."""
    return embedded_model_dir("embedded-64k" if long_context else "embedded", cache_dir)


# The embedded models by the name `--model` takes (engine, rollouts, train): one recipe, each variant by overrides.
# Cache directories are keyed by the name on the right: bump its suffix whenever a recipe changes.
EMBEDDED_MODELS: dict[str, tuple[str, dict]] = {
    "embedded": (TINY_MODEL_NAME, {}),
    # The same weights with LONG_CONTEXT_POSITIONS positions: fits the big agent CLIs' first prompts.
    "embedded-64k": (TINY_LONG_MODEL_NAME, {"max_position_embeddings": LONG_CONTEXT_POSITIONS}),
    # Init scale 0.5: peaked next-token distributions, so a few dozen GRPO steps move a reward (the learning demo).
    "embedded-peaked": ("tiny-qwen3-peaked-v1", {"initializer_range": 0.5}),
}


def embedded_model_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the embedded model `name` (see EMBEDDED_MODELS), building it on first use.

    `cache_dir` is the cache root (default `$INTERCEPT_RL_CACHE`, else `~/.cache/intercept-rl`); the model lives in
    `<root>/models/<cache name>`. The build happens in a temporary sibling directory that is renamed into place, so
    a crash never leaves a half-written model and concurrent builders simply keep whichever finished first.
    """
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED_MODELS)}")
    cache_name, overrides = EMBEDDED_MODELS[name]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    target = root / "models" / cache_name
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{cache_name}-", dir=target.parent))
    try:
        logger.info("building the embedded model %s into %s", name, target)
        build_tiny_model(staging, **overrides)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
