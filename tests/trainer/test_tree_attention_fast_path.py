"""trainer/cpu_compat.py's fast tree-attention path (bottom-right `CausalBias`) against the dense-mask reference and
against unpacked attention, forward and backward, and that the causal window-free case really avoids dense masks."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import CausalBias
from trl.experimental.async_grpo import packing

from trainer import cpu_compat

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _packed_group(rng: random.Random, prompt_len: int, completions: list[int], fork_at: int | None = None):
    """One GRPO group the way TRL packs it (shared prompt once), optionally with a shared first turn (a fork)."""
    prompt = [rng.randrange(100) for _ in range(prompt_len)]
    turn = [rng.randrange(100) for _ in range(fork_at or 0)]
    samples = [prompt + turn + [rng.randrange(100) for _ in range(n)] for n in completions]
    row = packing.TreeRow()
    for ids in samples:
        n = len(ids)
        row.add({"input_ids": np.array(ids, dtype=np.int64),
                 "completion_mask": np.array([0] * prompt_len + [1] * (n - prompt_len), dtype=np.int64),
                 "old_log_probs": np.zeros(n, dtype=np.float32), "advantage": 1.0, "group_id": 0, "metrics": {}})
    packed = row.pack()
    kv, cu_k = packed["tree_kv_index"].tolist(), packed["tree_cu_seqlens_k"].tolist()
    input_ids = packed["input_ids"].tolist()
    paths = []
    for ids in samples:
        for s in range(len(cu_k) - 1):
            path = kv[cu_k[s]:cu_k[s + 1]]
            if len(path) == len(ids) and [input_ids[p] for p in path] == ids:
                paths.append(path)
                break
        else:
            raise AssertionError("no segment ends a sample")
    return packed, paths


def _qkv(n, heads, kv_heads, dim, device, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, h, dim, generator=generator).to(device=device, dtype=dtype).requires_grad_()
            for h in (heads, kv_heads, kv_heads)]


def _call(fn, q, k, v, packed, device):
    kv_index = packed["tree_kv_index"].to(device)
    return fn(q, k.index_select(0, kv_index), v.index_select(0, kv_index), packed["tree_cu_seqlens_q"].to(device),
              packed["tree_cu_seqlens_k"].to(device), *packed["tree_max_seqlens"].tolist(),
              softmax_scale=q.shape[-1] ** -0.5, causal=True, window_size=(-1, -1))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 2), (4, 4)])
@pytest.mark.parametrize("fork_at", [None, 5])
def test_fast_path_equals_masked_reference_and_unpacked_forward_and_backward(device, heads, kv_heads, fork_at):
    rng = random.Random(7)
    packed, paths = _packed_group(rng, prompt_len=23, completions=[9, 14, 3, 11], fork_at=fork_at)
    n, dim = len(packed["input_ids"]), 16
    q, k, v = _qkv(n, heads, kv_heads, dim, device, torch.float32, seed=1)
    grad = torch.randn(n, heads, dim, generator=torch.Generator().manual_seed(2)).to(device)

    fast = _call(cpu_compat.torch_flash_attn_varlen_func, q, k, v, packed, device)
    fast_grads = torch.autograd.grad(fast, (q, k, v), grad)
    masked = _call(cpu_compat.masked_flash_attn_varlen_func, q, k, v, packed, device)
    masked_grads = torch.autograd.grad(masked, (q, k, v), grad)
    tol = 1e-5 if device == "cpu" else 2e-4  # CUDA: fused kernels vs the math path, fp32 (TF32 off by default)
    torch.testing.assert_close(fast, masked, atol=tol, rtol=0)
    for a, b in zip(fast_grads, masked_grads, strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=0)
    for path in paths:
        index = torch.tensor(path, device=device)
        reference = F.scaled_dot_product_attention(
            q[index].transpose(0, 1), k[index].transpose(0, 1), v[index].transpose(0, 1), is_causal=True,
            enable_gqa=heads != kv_heads).transpose(0, 1)
        torch.testing.assert_close(fast[index], reference, atol=tol, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 fused kernels need CUDA")
def test_fast_path_in_bf16_on_cuda_matches_unpacked_within_rounding():
    rng = random.Random(3)
    packed, paths = _packed_group(rng, prompt_len=300, completions=[120, 64, 200, 77])
    n = len(packed["input_ids"])
    q, k, v = _qkv(n, 8, 2, 128, "cuda", torch.bfloat16, seed=4)
    with torch.no_grad():
        fast = _call(cpu_compat.torch_flash_attn_varlen_func, q, k, v, packed, "cuda")
        for path in paths:
            index = torch.tensor(path, device="cuda")
            reference = F.scaled_dot_product_attention(
                q[index].transpose(0, 1), k[index].transpose(0, 1), v[index].transpose(0, 1), is_causal=True,
                enable_gqa=True).transpose(0, 1)
            assert (fast[index].float() - reference.float()).abs().max().item() < 2e-2


def test_causal_window_free_segments_never_build_a_dense_mask(monkeypatch):
    """The point of the fast path: no boolean `(Lq, Lk)` mask is built for plain causal attention; the completion
    segments (fewer queries than keys) go through torch's bottom-right `CausalBias`."""
    masks, biases = [], []
    real_mask, real_dispatch = cpu_compat._segment_mask, CausalBias._dispatch

    def mask_spy(*args, **kwargs):
        masks.append(args)
        return real_mask(*args, **kwargs)

    def dispatch_spy(*args, **kwargs):
        biases.append(kwargs.get("attn_mask", args[3] if len(args) > 3 else None))
        return real_dispatch(*args, **kwargs)

    monkeypatch.setattr(cpu_compat, "_segment_mask", mask_spy)
    monkeypatch.setattr(CausalBias, "_dispatch", staticmethod(dispatch_spy))
    packed, _ = _packed_group(random.Random(0), prompt_len=10, completions=[4, 6, 2])
    n = len(packed["input_ids"])
    q, k, v = _qkv(n, 4, 2, 8, "cpu", torch.float32, seed=0)
    _call(cpu_compat.torch_flash_attn_varlen_func, q, k, v, packed, "cpu")
    assert masks == []
    assert len(biases) == 3 and all(isinstance(b, CausalBias) for b in biases)  # one per completion segment

    _call(cpu_compat.masked_flash_attn_varlen_func, q, k, v, packed, "cpu")  # the reference masks every segment
    assert len(masks) == 4
    masks.clear()  # a sliding window still takes the exact masked path
    kv_index = packed["tree_kv_index"]
    cpu_compat.torch_flash_attn_varlen_func(
        q, k.index_select(0, kv_index), v.index_select(0, kv_index), packed["tree_cu_seqlens_q"],
        packed["tree_cu_seqlens_k"], *packed["tree_max_seqlens"].tolist(), causal=True, window_size=(3, 0))
    assert len(masks) == 4
