"""`trainer/cpu_compat.py`'s torch tree attention on the GPU: exactness against unpacked SDPA, and its speed.

The shape is one GRPO group as TRL packs it: `--group` completions of `--completion-len` tokens sharing a
`--prompt-len` prompt, Qwen3-8B-like heads (32 query / 8 KV heads, head_dim 128). TRL's `TreeRow` packs the shared
prompt once; the reference runs SDPA on each unpacked sequence (prompt + completion). Reported per dtype: the max abs
difference on every completion token, and the median forward / forward+backward time of both paths.

"tree" is what the trainer uses (`cpu_compat.torch_flash_attn_varlen_func`: per segment, torch's bottom-right
`CausalBias`, fused SDPA kernels). Candidates, measured beside it: "tree_masked" (the previous fallback, a dense
boolean mask per segment, kept as the reference path) and, on CUDA where this torch has it, "torch_varlen" (torch's
own varlen flash attention, all segments in one call).

Usage: python gpu/bench_tree_attention.py --out bench_tree_attention.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-len", type=int, default=4096, help="Shared prompt tokens.")
    parser.add_argument("--completion-len", type=int, default=1024, help="Tokens per completion.")
    parser.add_argument("--group", type=int, default=8, help="Completions sharing the prompt (one GRPO group).")
    parser.add_argument("--heads", type=int, default=32, help="Query heads.")
    parser.add_argument("--kv-heads", type=int, default=8, help="Key/value heads (GQA).")
    parser.add_argument("--head-dim", type=int, default=128, help="Head dimension.")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], help="Dtypes to check.")
    parser.add_argument("--repeats", type=int, default=10, help="Timed repetitions (after 3 warm-ups).")
    parser.add_argument("--device", default="cuda", help="cuda (the point), or cpu for a smoke run.")
    parser.add_argument("--out", default="bench_tree_attention.json", help="Where the JSON report goes.")
    return parser


def packed_group(args):
    """TRL's own packing of one group: returns (packed dict, per-sample K/V paths into the packed rows)."""
    import numpy as np

    from intercept_common.trl_api import packing

    rng = np.random.default_rng(0)
    prompt = rng.integers(0, 1000, args.prompt_len).tolist()
    samples = [prompt + rng.integers(0, 1000, args.completion_len).tolist() for _ in range(args.group)]
    row = packing.TreeRow()
    for ids in samples:
        n = len(ids)
        row.add({"input_ids": np.array(ids, dtype=np.int64),
                 "completion_mask": np.array([0] * len(prompt) + [1] * (n - len(prompt)), dtype=np.int64),
                 "old_log_probs": np.zeros(n, dtype=np.float32), "advantage": 1.0, "group_id": 0, "metrics": {}})
    packed = row.pack()
    kv, cu_k = packed["tree_kv_index"].tolist(), packed["tree_cu_seqlens_k"].tolist()
    paths = [kv[cu_k[s]:cu_k[s + 1]] for s in range(len(cu_k) - 1) if cu_k[s + 1] - cu_k[s] == len(samples[0])]
    assert len(paths) == args.group, f"expected {args.group} full-length segments, found {len(paths)}"
    return packed, paths


def torch_varlen_attention():
    """torch's own varlen flash attention (`torch.nn.attention.varlen.varlen_attn`, CUDA only), adapted to flash-attn's
    `flash_attn_varlen_func` call, or None when this torch has none. Its keyword names changed between releases
    (`is_causal` → `window_size`), so they are read off the signature. A candidate measured here, not used by the
    trainer."""
    import inspect

    import torch

    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters

    def call(q, k, v, cu_seqlens_q, cu_seqlens_k, max_q, max_k, softmax_scale=None, causal=True):
        kwargs = {"scale": softmax_scale} if "scale" in params else {}
        if "window_size" in params:
            kwargs["window_size"] = (-1, 0) if causal else (-1, -1)
        else:
            kwargs["is_causal"] = causal
        if k.shape[1] != q.shape[1]:
            if "enable_gqa" in params:
                kwargs["enable_gqa"] = True
            else:
                repeat = q.shape[1] // k.shape[1]
                k, v = k.repeat_interleave(repeat, 1), v.repeat_interleave(repeat, 1)
        cu_q, cu_k = cu_seqlens_q.to(torch.int32), cu_seqlens_k.to(torch.int32)
        return varlen_attn(q, k, v, cu_q, cu_k, int(max_q), int(max_k), **kwargs)

    return call


def timed(fn, repeats: int) -> float:
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def run(args) -> dict:
    import torch
    import torch.nn.functional as F

    from trainer.cpu_compat import masked_flash_attn_varlen_func, torch_flash_attn_varlen_func

    packed, paths = packed_group(args)
    n = len(packed["input_ids"])
    cu_q, cu_k = packed["tree_cu_seqlens_q"].to(args.device), packed["tree_cu_seqlens_k"].to(args.device)
    kv_index = packed["tree_kv_index"].to(args.device)
    max_q, max_k = packed["tree_max_seqlens"].tolist()
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    report = {"device": device_name, "torch": torch.__version__, "packed_tokens": n,
              "unpacked_tokens": args.group * (args.prompt_len + args.completion_len), "by_dtype": {}}
    for name in args.dtypes:
        dtype = getattr(torch, name)
        torch.manual_seed(0)
        q = torch.randn(n, args.heads, args.head_dim, device=args.device, dtype=dtype, requires_grad=True)
        k = torch.randn(n, args.kv_heads, args.head_dim, device=args.device, dtype=dtype, requires_grad=True)
        v = torch.randn(n, args.kv_heads, args.head_dim, device=args.device, dtype=dtype, requires_grad=True)
        index = [torch.tensor(p, device=args.device) for p in paths]

        def tree():
            return torch_flash_attn_varlen_func(q, k.index_select(0, kv_index), v.index_select(0, kv_index), cu_q,
                                                cu_k, max_q, max_k, softmax_scale=args.head_dim ** -0.5, causal=True)

        def unpacked():
            return [F.scaled_dot_product_attention(q[i].transpose(0, 1)[None], k[i].transpose(0, 1)[None],
                                                   v[i].transpose(0, 1)[None], is_causal=True,
                                                   enable_gqa=True)[0].transpose(0, 1) for i in index]

        def via(fn):
            return lambda: fn(q, k.index_select(0, kv_index), v.index_select(0, kv_index), cu_q, cu_k, max_q, max_k,
                              softmax_scale=args.head_dim ** -0.5, causal=True)

        # "tree_masked": the previous fallback (a dense boolean mask per segment), kept as the reference path.
        candidate_fns = {"tree_masked": masked_flash_attn_varlen_func}
        varlen = torch_varlen_attention() if args.device == "cuda" else None
        if varlen is not None:
            candidate_fns["torch_varlen"] = varlen

        with torch.no_grad():
            out_tree, out_ref = tree(), unpacked()
            completion = slice(args.prompt_len, None)
            diff = max((out_tree[i][completion].float() - r[completion].float()).abs().max().item()
                       for i, r in zip(index, out_ref))
            prompt_diff = max((out_tree[i][: args.prompt_len].float() - r[: args.prompt_len].float()).abs().max().item()
                              for i, r in zip(index, out_ref))
            fwd_tree, fwd_ref = timed(tree, args.repeats), timed(unpacked, args.repeats)
            candidates = {}
            for name_c, fn in candidate_fns.items():
                try:
                    out_c = via(fn)()
                    candidates[name_c] = {
                        "max_abs_diff_vs_unpacked": max((out_c[i].float() - r.float()).abs().max().item()
                                                        for i, r in zip(index, out_ref)),
                        "fwd_ms": round(timed(via(fn), args.repeats), 3)}
                except Exception as error:  # noqa: BLE001 - a candidate this torch cannot run is reported, not fatal
                    candidates[name_c] = {"error": f"{type(error).__name__}: {error}"[:300]}
        grad = torch.randn(n, args.heads, args.head_dim, device=args.device, dtype=dtype)
        bwd_tree = timed(lambda: tree().backward(grad), args.repeats)
        bwd_ref = timed(lambda: torch.autograd.backward(unpacked(), [grad[i] for i in index]), args.repeats)
        for name_c, fn in candidate_fns.items():
            if "error" in candidates[name_c]:
                continue
            try:
                candidates[name_c]["fwd_bwd_ms"] = round(timed(lambda: via(fn)().backward(grad), args.repeats), 3)
            except Exception as error:  # noqa: BLE001
                candidates[name_c]["fwd_bwd_error"] = f"{type(error).__name__}: {error}"[:300]
        report["by_dtype"][name] = {
            "max_abs_diff_completion": diff, "max_abs_diff_prompt": prompt_diff,
            "fwd_ms_tree": round(fwd_tree, 3), "fwd_ms_unpacked": round(fwd_ref, 3),
            "fwd_bwd_ms_tree": round(bwd_tree, 3), "fwd_bwd_ms_unpacked": round(bwd_ref, 3),
            "candidates": candidates,
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if args.device == "cuda" else None}
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = run(args)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
