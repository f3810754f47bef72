"""Build the random-init Qwen3 that vLLM serves on the GPU box (no Hub there), with our own code.

`tiny` is exactly the embedded CPU default (`local_engine.embedded.ensure_tiny_model`: hidden 64, head_dim 16, fp32,
real Qwen3 tokenizer + TRL template). `wide` is the same recipe with head_dim 128 / hidden 1024, the shape vLLM's
fast attention backends accept in bf16 (FlashAttention and Triton refuse head_dim < 32): the fallback when a backend
refuses the tiny one, and the model the kit's README was checked with.

Usage: python gpu/build_model.py --variant tiny --cache-dir /tmp/irl  (prints the model directory)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

VARIANTS = ("tiny", "wide")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, default="tiny", help="Which random-init Qwen3 to build.")
    parser.add_argument("--cache-dir", default="/tmp/irl", help="Cache root (the model lands in <root>/models/…).")
    return parser


def build_wide_model(target: Path) -> Path:
    """The embedded recipe with vLLM-friendly attention shapes; deterministic like the tiny one."""
    import torch
    from transformers import GenerationConfig, Qwen3ForCausalLM

    from local_engine.embedded import TINY_MODEL_SEED, tiny_model_config
    from rollout_worker.chat_template import load_qwen3_tokenizer

    if (target / "config.json").is_file():
        return target
    tokenizer = load_qwen3_tokenizer()
    config = tiny_model_config(tokenizer)
    config.hidden_size, config.intermediate_size, config.num_hidden_layers = 1024, 2048, 4
    config.num_attention_heads, config.num_key_value_heads, config.head_dim = 8, 4, 128
    config.layer_types = ["full_attention"] * config.num_hidden_layers  # derived at init from the old depth
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_MODEL_SEED)
        model = Qwen3ForCausalLM(config).to(torch.float32).eval()
    im_end, endoftext = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    model.generation_config = GenerationConfig(
        bos_token_id=endoftext, eos_token_id=[im_end, endoftext], pad_token_id=endoftext, do_sample=True
    )
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.variant == "tiny":
        from local_engine.embedded import ensure_tiny_model

        path = ensure_tiny_model(args.cache_dir)
    else:
        path = build_wide_model(Path(args.cache_dir) / "models" / "wide-qwen3-v1")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
