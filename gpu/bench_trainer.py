"""The trainer's forward+backward at a realistic batch on one GPU: tokens/s, MFU and the top kernels.

What runs is the trainer's own compute path, minus the rollouts: a random-init Qwen3 (an architecture of
`gpu/build_model.py`, built in memory in bf16: no files, no Hub), TRL 1.16's tree attention (`tree_fa3`, served by our
`trainer/cpu_compat.py` torch path, or a candidate) and fused LM head (log-probs + entropy, as `AsyncGRPOTrainer`
installs it), fed rows that TRL's own `TreeRow` packs, and the PPO-clip loss of `AsyncGRPOTrainer.compute_loss`.

A row is filled by packing samples of `--seq-lens` tokens (a prompt shared within a GRPO group, then the completion)
while it stays within `--row-tokens` unique tokens, as TRL's `TokenBudgetBatcher` does. Per configuration (variant x
sample length x row budget x gradient checkpointing x attention path) it reports the median forward and forward+backward time over `--repeats` steps after
`--warmup`, forwarded tokens/s, MFU the way TRL's `perf/mfu_fwd_bwd` computes it (its FLOPs-per-token formula at the
row's mean sample length, its peak table: 989 TFLOP/s bf16 for H100/H200), and peak memory; an OOM is reported, not
fatal. `--profile` runs torch's profiler over one step of the first configuration and reports the top GPU kernels, their
share by kind, and how busy the GPU was (kernel time / step wall time: the rest is launch overhead or host syncs).

Usage: python gpu/bench_trainer.py --variants qwen3-1.7b --seq-lens 8192 16384 --row-tokens 16384 --out bench_trainer.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repo root on the path for `trainer` / `gpu`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu.build_model import ARCHITECTURES  # noqa: E402

# A toy architecture for the CPU smoke test (tests/test_gpu_scripts.py); never a figure.
TOY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
           head_dim=16, max_position_embeddings=40960, tie_word_embeddings=True, rope_theta=1_000_000.0,
           rms_norm_eps=1e-6)
VARIANTS = {**ARCHITECTURES, "toy": TOY}
QWEN3_VOCAB = 151_936
ATTENTIONS = ("tree", "varlen")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["qwen3-1.7b"], choices=sorted(VARIANTS),
                        help="Architectures (gpu/build_model.py's), each built in memory, random init, bf16.")
    parser.add_argument("--seq-lens", nargs="+", type=int, default=[8192, 16384], help="Tokens per sample.")
    parser.add_argument("--row-tokens", nargs="+", type=int, default=[16384],
                        help="Unique-token budget of a packed row (the trainer's token_budget); every pair with "
                             "seq-len <= row-tokens is measured.")
    parser.add_argument("--group", type=int, default=8, help="Samples per GRPO group (sharing the group's prompt).")
    parser.add_argument("--prompt-frac", type=float, default=0.25, help="The shared prompt's share of a sample.")
    parser.add_argument("--checkpointing", nargs="+", default=["on", "off"], choices=["off", "on"],
                        help="Gradient checkpointing (the trainer's default is on: TRL's AsyncGRPOConfig).")
    parser.add_argument("--attention", nargs="+", default=["tree"], choices=ATTENTIONS,
                        help="tree: trainer/cpu_compat.py's path (what the trainer runs); varlen: torch's varlen "
                             "flash attention in one call (a candidate, CUDA bf16 only).")
    parser.add_argument("--only-checkpointed", nargs="*", default=["qwen3-8b"],
                        help="Variants measured with checkpointing on only (no room for their activations).")
    parser.add_argument("--optimizer", action="store_true", help="Also time one fused AdamW step per variant.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps per configuration.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed steps per configuration.")
    parser.add_argument("--profile", action="store_true", help="Profile one step of the first configuration.")
    parser.add_argument("--top", type=int, default=15, help="Kernels listed by the profile.")
    parser.add_argument("--vocab", type=int, default=QWEN3_VOCAB, help="Vocabulary size (Qwen3's by default).")
    parser.add_argument("--device", default="cuda", help="cuda (the point), or cpu for a smoke run.")
    parser.add_argument("--out", default="bench_trainer.json", help="Where the JSON report goes.")
    return parser


def packed_row(row_tokens: int, seq_len: int, args, seed: int = 0) -> dict:
    """One row as TRL's collator packs it: samples of `seq_len` tokens (a prompt of `--prompt-frac` shared by the
    samples of a group, `--group` per group), added while the row stays within `row_tokens` unique tokens (what
    TRL's `TokenBudgetBatcher` does with `token_budget`)."""
    import numpy as np

    from intercept_common.trl_api import packing

    rng = np.random.default_rng(seed)
    prompt_len = max(1, int(seq_len * args.prompt_frac))
    row, group_id, in_group, prompt = packing.TreeRow(), 0, 0, None
    while True:
        if prompt is None or in_group == args.group:
            prompt, in_group, group_id = rng.integers(0, args.vocab, prompt_len).tolist(), 0, group_id + 1
        ids = prompt + rng.integers(0, args.vocab, seq_len - prompt_len).tolist()
        mask = np.array([0] * prompt_len + [1] * (seq_len - prompt_len), dtype=np.int64)
        sample = {"input_ids": np.array(ids, dtype=np.int64), "completion_mask": mask,
                  "old_log_probs": rng.normal(-11.9, 0.1, seq_len).astype(np.float32) * mask,
                  "advantage": float(rng.choice([-1.0, 1.0])), "group_id": group_id, "metrics": {}}
        if row.samples and not row.fits(sample, row_tokens):
            break
        row.add(sample)
        in_group += 1
    packed = row.pack()
    packed["samples"] = len(row.samples)
    return packed


def build_model(variant: str, args):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from intercept_common.trl_api import add_fused_lm_head, packing

    packing.register_tree_attention()
    config = Qwen3Config(vocab_size=args.vocab, **VARIANTS[variant])
    config.layer_types = ["full_attention"] * config.num_hidden_layers
    config.use_cache = False
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Qwen3ForCausalLM._from_config(config, attn_implementation=packing.TREE_ATTENTION, dtype=torch.bfloat16)
    model.train()
    # As AsyncGRPOTrainer.__init__ does: per-token log-probs and entropy without materializing the logits.
    add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))
    return model


def use_attention(name: str) -> None:
    """Point TRL's tree attention at one implementation (what `apply_cpu_compat` does for the trainer)."""
    from types import SimpleNamespace

    from intercept_common.trl_api import packing
    from trainer.cpu_compat import apply_cpu_compat

    if name == "tree":
        apply_cpu_compat("torch")
        return
    from gpu.bench_tree_attention import torch_varlen_attention

    varlen = torch_varlen_attention()
    if varlen is None:
        raise RuntimeError("this torch has no torch.nn.attention.varlen")
    def call(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale=None, causal=True, window_size=(-1, -1)):
        assert tuple(window_size) == (-1, -1), "the candidate is measured on window-free layers only"
        return varlen(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale=softmax_scale, causal=causal)

    provider = SimpleNamespace(flash_attn_varlen_func=call, name="torch varlen")
    packing._flash_attn = lambda: provider


def on_device(packed: dict, device: str) -> dict:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in packed.items()}


def step(model, batch: dict, backward: bool = True):
    """AsyncGRPOTrainer.compute_loss's forward and PPO-clip loss (epsilon 0.2), then backward; returns log-probs."""
    import torch

    tree = {k: batch[k] for k in ("tree_kv_index", "tree_cu_seqlens_q", "tree_cu_seqlens_k")}
    tree["tree_max_seqlen_q"], tree["tree_max_seqlen_k"] = batch["tree_max_seqlens"].tolist()
    outputs = model(input_ids=batch["input_ids"][None], position_ids=batch["position_ids"][None],
                    shift_labels=batch["shift_labels"][None], fused_lm_head=True, **tree)
    log_probs = outputs.log_probs.flatten()[batch["token_index"]]
    coef = torch.exp(log_probs - batch["old_log_probs"])
    advantages = batch["advantages"]
    loss = -torch.min(coef * advantages, torch.clamp(coef, 0.8, 1.2) * advantages).sum() / log_probs.numel()
    if backward:
        loss.backward()
    return log_probs.detach()


def timed_steps(model, batch, args) -> tuple[float, float]:
    """Median forward and forward+backward seconds (grads dropped between steps, outside the timing, as the
    trainer's optimizer.zero_grad does)."""
    import torch

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    fwd, fwd_bwd = [], []
    for i in range(args.warmup + args.repeats):
        model.zero_grad(set_to_none=True)
        sync()
        start = time.perf_counter()
        step(model, batch)
        sync()
        if i >= args.warmup:
            fwd_bwd.append(time.perf_counter() - start)
    for i in range(max(1, args.repeats // 2) + 1):
        sync()
        start = time.perf_counter()
        step(model, batch, backward=False)  # the forward alone, with its autograd graph (the trainer's perf/fwd_s)
        sync()
        if i:
            fwd.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return statistics.median(fwd), statistics.median(fwd_bwd)


def kernel_kind(name: str) -> str:
    low = name.lower()
    if any(s in low for s in ("flash", "fmha", "attention", "attn")):  # before matmul: flash kernels are cutlass
        return "attention"
    if any(s in low for s in ("gemm", "nvjet", "xmma", "cutlass", "sm90_", "cublas")):
        return "matmul"
    if "triton" in low:
        return "triton (fused LM head)"
    if any(s in low for s in ("elementwise", "vectorized", "reduce", "copy", "cat", "index", "fill", "norm")):
        return "elementwise/reduce/copy"
    return "other"


def profile_step(model, batch, args) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    model.zero_grad(set_to_none=True)
    step(model, batch)  # warm
    model.zero_grad(set_to_none=True)
    if args.device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        step(model, batch)
        if args.device == "cuda":
            torch.cuda.synchronize()
    wall_us = (time.perf_counter() - start) * 1e6
    kernels: dict[str, list[float]] = {}
    syncs = 0
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            entry = kernels.setdefault(event.name, [0.0, 0])
            entry[0] += event.device_time if hasattr(event, "device_time") else event.cuda_time
            entry[1] += 1
        elif event.name in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync"):
            syncs += 1
    total = sum(t for t, _ in kernels.values()) or 1.0
    by_kind: dict[str, float] = {}
    for name, (t, _) in kernels.items():
        by_kind[kernel_kind(name)] = by_kind.get(kernel_kind(name), 0.0) + t
    top = sorted(kernels.items(), key=lambda kv: -kv[1][0])[: args.top]
    model.zero_grad(set_to_none=True)
    return {"step_wall_ms": round(wall_us / 1000, 1), "kernel_ms": round(total / 1000, 1),
            "gpu_busy_frac": round(total / wall_us, 3), "host_syncs_and_copies": syncs,
            "by_kind_pct": {k: round(100 * v / total, 1) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            "top_kernels": [{"name": name[:140], "ms": round(t / 1000, 2), "calls": n, "pct": round(100 * t / total, 1)}
                            for name, (t, n) in top]}


def optimizer_ms(model, args) -> float:
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=args.device == "cuda")
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    times = []
    for _ in range(4):
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    del optimizer
    model.zero_grad(set_to_none=True)
    return round(statistics.median(times[1:]) * 1000, 1)


def run(args) -> dict:
    import torch

    from intercept_common.trl_api import compute_flops_per_token, compute_mfu, get_peak_flops

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    peak = get_peak_flops(device_name, "bfloat16")
    report = {"device": device_name, "torch": torch.__version__, "peak_flops": peak, "results": [],
              "optimizer_ms": {}, "logprob_max_abs_diff_vs_tree": {}}
    rows = {(n, seq): packed_row(n, seq, args) for n in args.row_tokens for seq in args.seq_lens if seq <= n}
    for variant in args.variants:
        model = build_model(variant, args)
        params = sum(p.numel() for p in model.parameters())
        flops_config = model.config.get_text_config()
        for (budget, seq_len), packed in rows.items():
            batch = on_device(packed, args.device)
            forwarded = len(packed["input_ids"])
            mean_seq_len = forwarded / packed["samples"]  # TRL's collator: forwarded tokens / samples
            flops_per_token = compute_flops_per_token(flops_config, int(mean_seq_len))
            reference = None
            for ckpt in args.checkpointing:
                if ckpt == "off" and variant in args.only_checkpointed:
                    continue
                if ckpt == "on":
                    model.gradient_checkpointing_enable()  # the Trainer's call (gradient_checkpointing_kwargs None)
                else:
                    model.gradient_checkpointing_disable()
                for attention in args.attention:
                    use_attention(attention)
                    result = {"variant": variant, "params_b": round(params / 1e9, 3), "seq_len": seq_len,
                              "row_budget": budget, "row_tokens": forwarded,
                              "samples": packed["samples"], "trained_tokens": int(packed["token_index"].numel()),
                              "checkpointing": ckpt, "attention": attention}
                    if args.device == "cuda":
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                    try:
                        with torch.no_grad():
                            log_probs = step(model, batch, backward=False)
                        if reference is None:
                            reference = log_probs
                        else:  # every later configuration of this row against the first (the same weights)
                            key = f"{variant}/seq{seq_len}/row{budget}/{attention}/ckpt-{ckpt}"
                            report["logprob_max_abs_diff_vs_tree"][key] = (log_probs - reference).abs().max().item()
                        fwd_s, fwd_bwd_s = timed_steps(model, batch, args)
                    except torch.OutOfMemoryError as error:
                        result["error"] = f"OOM: {str(error)[:160]}"
                        model.zero_grad(set_to_none=True)
                        report["results"].append(result)
                        print(json.dumps(result), flush=True)
                        continue
                    tok_s = forwarded / fwd_bwd_s
                    result.update(fwd_ms=round(fwd_s * 1000, 1), fwd_bwd_ms=round(fwd_bwd_s * 1000, 1),
                                  tokens_per_s=round(tok_s), mean_seq_len=round(mean_seq_len),
                                  tflops_per_s=round(flops_per_token * tok_s / 1e12, 1),
                                  mfu_pct=round(compute_mfu(flops_per_token, tok_s, 1, peak), 1) if peak else None)
                    if args.device == "cuda":
                        result["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
                    report["results"].append(result)
                    print(json.dumps(result), flush=True)
                    Path(args.out).write_text(json.dumps(report, indent=1))  # a killed run keeps what it measured
                    if args.profile and "profile" not in report:
                        report["profile"] = {"config": result, **profile_step(model, batch, args)}
                        # The profiler slows the host; against the unprofiled step time the share is fairer.
                        report["profile"]["gpu_busy_frac_vs_timed_step"] = round(
                            report["profile"]["kernel_ms"] / result["fwd_bwd_ms"], 3)
                        print(json.dumps(report["profile"], indent=1), flush=True)
        model.gradient_checkpointing_disable()
        if args.optimizer and variant not in args.only_checkpointed:
            try:
                report["optimizer_ms"][variant] = optimizer_ms(model, args)
            except torch.OutOfMemoryError:
                report["optimizer_ms"][variant] = "OOM"
        del model
        if args.device == "cuda":
            torch.cuda.empty_cache()
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = run(args)
    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
