"""Build the random-init Qwen3 that vLLM serves on the GPU box (no Hub there), with our own code.

`tiny` is exactly the embedded CPU default (`local_engine.embedded.ensure_tiny_model`: hidden 64, head_dim 16, fp32,
real Qwen3 tokenizer + TRL template). `wide` is the same recipe with head_dim 128 / hidden 1024, the shape vLLM's
fast attention backends accept in bf16 (FlashAttention and Triton refuse head_dim < 32): the fallback when a backend
refuses the tiny one, and the model the kit's README was checked with. `qwen3-1.7b` is the Qwen3-1.7B architecture
(28 layers, hidden 2048, 16/8 heads, head_dim 128, tied embeddings; 1.72 B parameters), random init, saved in bf16:
a realistic size for the production path (weights cannot be downloaded on the GPU box). It is built on the GPU when
there is one (seconds instead of minutes on CPU).

Usage: python gpu/build_model.py --variant tiny --cache-dir /tmp/irl  (prints the model directory)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

VARIANTS = ("tiny", "wide", "qwen3-1.7b", "qwen3-8b")

# Qwen3-1.7B's config.json (Hugging Face Qwen/Qwen3-1.7B), the fields that shape the weights.
QWEN3_1_7B = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, tie_word_embeddings=True,
                  rope_theta=1_000_000.0, rms_norm_eps=1e-6)
# The Qwen3-8B architecture (untied embeddings): the multi-GPU FSDP2 run's model (gpu/fsdp2_x4.sh).
QWEN3_8B = dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, tie_word_embeddings=False,
                rope_theta=1_000_000.0, rms_norm_eps=1e-6)
ARCHITECTURES = {"qwen3-1.7b": QWEN3_1_7B, "qwen3-8b": QWEN3_8B}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, default="tiny", help="Which random-init Qwen3 to build.")
    parser.add_argument("--cache-dir", default="/tmp/irl", help="Cache root (the model lands in <root>/models/…).")
    return parser


def build_wide_model(target: Path) -> Path:
    """The embedded recipe with vLLM-friendly attention shapes; deterministic like the tiny one."""
    from local_engine.embedded import build_tiny_model

    if (target / "config.json").is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)
    build_tiny_model(target, hidden_size=1024, intermediate_size=2048, num_hidden_layers=4, num_attention_heads=8,
                     num_key_value_heads=4, head_dim=128)
    return target


def build_qwen3_1_7b(target: Path, seed: int = 0, architecture: dict | None = None) -> Path:
    """Random-init Qwen3 of a real architecture (default Qwen3-1.7B) in bf16 with the real Qwen3 tokenizer and TRL's
    template (like `tiny`)."""
    import torch
    from transformers import GenerationConfig, Qwen3ForCausalLM

    from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer
    from local_engine.embedded import tiny_model_config

    if (target / "config.json").is_file():
        return target
    tokenizer = load_qwen3_tokenizer()
    config = tiny_model_config(tokenizer)
    for name, value in (architecture or QWEN3_1_7B).items():
        setattr(config, name, value)
    config.layer_types = ["full_attention"] * config.num_hidden_layers
    config.torch_dtype = "bfloat16"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config).to(torch.bfloat16).eval()
    im_end, endoftext = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    model.generation_config = GenerationConfig(
        bos_token_id=endoftext, eos_token_id=[im_end, endoftext], pad_token_id=endoftext, do_sample=True
    )
    staging = target.with_name(target.name + ".partial")
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    staging.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.variant == "tiny":
        from local_engine.embedded import ensure_tiny_model

        path = ensure_tiny_model(args.cache_dir)
    elif args.variant == "wide":
        path = build_wide_model(Path(args.cache_dir) / "models" / "wide-qwen3-v1")
    else:
        path = build_qwen3_1_7b(Path(args.cache_dir) / "models" / f"{args.variant}-random",
                                architecture=ARCHITECTURES[args.variant])
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
