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
    from local_engine.embedded import build_tiny_model

    if (target / "config.json").is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)
    build_tiny_model(target, hidden_size=1024, intermediate_size=2048, num_hidden_layers=4, num_attention_heads=8,
                     num_key_value_heads=4, head_dim=128)
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
