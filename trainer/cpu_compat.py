"""Run TRL 1.16's AsyncGRPOTrainer where CUDA or the Hub's FA3 kernel is missing (design §4).

This is the ONE module that touches TRL private helpers; `tests/trainer/test_cpu_compat.py` pins every one of them, so a TRL
upgrade that renames or reshapes them fails loudly there instead of silently here. Two things break off-GPU:

1. Tree-packed attention (`trl.experimental.async_grpo.packing.tree_attention`) calls
   `packing._flash_attn().flash_attn_varlen_func(...)`, and `_flash_attn` fetches `kernels-community/flash-attn3` from
   the Hub. We replace `_flash_attn` with a provider of a pure-torch `flash_attn_varlen_func`: per tree segment, SDPA
   of the segment's queries over the K/V rows of its root-to-segment path, with a bottom-right-aligned causal mask
   (the flash-attn convention when a segment has fewer queries than keys). It is exact and works on CPU and GPU alike.
   The plain causal case (no window, no softcap: every Qwen3 layer) goes through torch's own bottom-right
   `CausalBias` (`is_causal` when a segment has as many queries as keys), which lets SDPA pick its fused
   flash / memory-efficient kernels on CUDA; a dense boolean mask (`masked_flash_attn_varlen_func`, the reference)
   would force its slower paths (measured on an H200: docs/gpu.md).
2. `AsyncGRPOTrainer.__init__` calls `get_peak_flops_per_device`, which calls `torch.cuda.get_device_name`. Without
   CUDA we make it return None, which TRL already treats as "MFU unknown" (throughput metrics are still logged).

`apply_cpu_compat()` patches only what is needed, is idempotent and returns what it patched. Also read here, for the
same reason: TRL's private decision to sync a LoRA adapter instead of weights (`trl_adapter_sync_prefix`).
"""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from trainer.modes import TreeAttention, parse_choice

logger = logging.getLogger(__name__)

# Overrides the default `auto` of `apply_cpu_compat` (trainer.modes.TreeAttention) for scripts without the flag.
TREE_ATTENTION_ENV = "INTERCEPT_RL_TREE_ATTENTION"

PATCHED_FLASH_ATTN = "trl.experimental.async_grpo.packing._flash_attn"
PATCHED_PEAK_FLOPS = "trl.experimental.async_grpo.async_grpo_trainer.get_peak_flops_per_device"


def torch_flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    **unsupported,
) -> torch.Tensor:
    """Pure-torch stand-in for flash-attn's `flash_attn_varlen_func`, with flash-attn's semantics.

    Causal, window-free, softcap-free segments use torch's bottom-right `CausalBias` (fused SDPA kernels); the rest
    use a dense boolean mask (`masked_flash_attn_varlen_func`). Both are exact.

    Args:
        q: `(total_q, heads, head_dim)`, the segments' queries laid end to end.
        k, v: `(total_k, kv_heads, head_dim)`, each segment's keys/values laid end to end (GQA: heads % kv_heads == 0).
        cu_seqlens_q, cu_seqlens_k: `(S + 1,)` segment boundaries in `q` and in `k`/`v`.
        max_seqlen_q, max_seqlen_k: unused (kept for signature compatibility).
        softmax_scale: defaults to `head_dim ** -0.5`.
        causal: bottom-right aligned: query `i` of a segment with `Lq` queries and `Lk` keys sees keys
            `j <= i + Lk - Lq`.
        window_size: `(left, right)` local window around the aligned diagonal; `-1` means unbounded.
        softcap: when > 0, scores become `softcap * tanh(scores / softcap)` before the softmax.

    Returns:
        `(total_q, heads, head_dim)` in `q`'s dtype.
    """
    if unsupported:
        # Silently ignoring e.g. `dropout_p` or `alibi_slopes` would compute a different attention than asked for.
        raise NotImplementedError(f"torch_flash_attn_varlen_func does not support {sorted(unsupported)}")
    return _varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, softmax_scale, causal, window_size, softcap,
                             lower_right=True)


def masked_flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
) -> torch.Tensor:
    """The reference path of `torch_flash_attn_varlen_func`: a dense boolean mask for every segment (slower on CUDA,
    where SDPA then cannot use its fused kernels). Kept for the tests and `gpu/bench_tree_attention.py`."""
    return _varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, softmax_scale, causal, window_size, softcap,
                             lower_right=False)


def _varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, softmax_scale, causal, window_size, softcap, *,
                      lower_right: bool) -> torch.Tensor:
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    left, right = window_size
    bounds_q = cu_seqlens_q.tolist()
    bounds_k = cu_seqlens_k.tolist()
    outputs = []
    for (q0, q1), (k0, k1) in zip(zip(bounds_q, bounds_q[1:]), zip(bounds_k, bounds_k[1:]), strict=True):
        n_q, n_k = q1 - q0, k1 - k0
        if n_q == 0:
            continue
        query = q[q0:q1].transpose(0, 1).unsqueeze(0)  # (1, heads, Lq, d)
        key = k[k0:k1].transpose(0, 1).unsqueeze(0)
        value = v[k0:k1].transpose(0, 1).unsqueeze(0)
        gqa = key.shape[1] != query.shape[1]
        if lower_right and causal and left < 0 and right < 0 and not (softcap and softcap > 0) and n_q <= n_k:
            # Bottom-right causal without materializing a mask: SDPA's fused kernels (flash / efficient) on CUDA.
            bias = None if n_q == n_k else causal_lower_right(n_q, n_k)
            out = F.scaled_dot_product_attention(
                query, key, value, attn_mask=bias, is_causal=bias is None, scale=scale, enable_gqa=gqa
            )
            outputs.append(out[0].transpose(0, 1))
            continue
        mask = _segment_mask(n_q, n_k, causal, left, right, q.device)
        if softcap and softcap > 0:
            out = _softcapped_attention(query, key, value, mask, scale, softcap)
        else:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale, enable_gqa=gqa)
        outputs.append(out[0].transpose(0, 1))
    if not outputs:
        return q.new_zeros(q.shape)
    return torch.cat(outputs, dim=0).to(q.dtype)


def _segment_mask(
    n_q: int, n_k: int, causal: bool, left: int, right: int, device: torch.device
) -> torch.Tensor | None:
    """Boolean `(Lq, Lk)` mask (True = may attend), aligned bottom-right like flash-attn; None if nothing is masked."""
    if not causal and left < 0 and right < 0:
        return None
    # Query i sits at key position i + (Lk - Lq): the segment's queries are the LAST Lq rows of its path.
    query_pos = torch.arange(n_q, device=device).unsqueeze(1) + (n_k - n_q)
    key_pos = torch.arange(n_k, device=device).unsqueeze(0)
    mask = torch.ones(n_q, n_k, dtype=torch.bool, device=device)
    if causal:
        mask &= key_pos <= query_pos
    if left >= 0:
        mask &= key_pos >= query_pos - left
    if right >= 0 and not causal:
        mask &= key_pos <= query_pos + right
    return mask


def _softcapped_attention(query, key, value, mask, scale, softcap):
    """Eager attention with tanh soft-capping (SDPA has no softcap), GQA by head repetition."""
    if key.shape[1] != query.shape[1]:
        repeat = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1)
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale
    scores = softcap * torch.tanh(scores / softcap)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), value.float()).to(query.dtype)


# What `packing._flash_attn()` returns once patched: an object with a `flash_attn_varlen_func`, like the Hub kernel.
TORCH_FLASH_ATTN = SimpleNamespace(flash_attn_varlen_func=torch_flash_attn_varlen_func, name="intercept-rl torch")


def _torch_flash_attn():
    return TORCH_FLASH_ATTN


def _peak_flops_unknown(accelerator, dtype):  # same signature as TRL's `get_peak_flops_per_device`
    """CPU stand-in for TRL's CUDA-only peak-FLOPs probe: None disables MFU metrics, as for an unknown GPU."""
    return None


def hub_flash_attention_loads() -> bool:
    """Whether TRL's own `_flash_attn()` (the Hub FA3 / aiter kernel) loads here. Never true without CUDA."""
    from intercept_common.trl_api import packing

    if not torch.cuda.is_available():
        return False
    flash_attn = getattr(packing._flash_attn, "__wrapped__", packing._flash_attn)
    try:
        flash_attn()
    except Exception as error:  # noqa: BLE001 - any failure to load means "use the fallback"
        logger.warning(f"Hub flash-attention kernel unavailable ({type(error).__name__}: {error}); using torch SDPA")
        return False
    return True


def apply_cpu_compat(tree_attention: str | None = None) -> list[str]:
    """Patch what TRL 1.16's AsyncGRPOTrainer needs to run on this machine; return the dotted names patched.

    Args:
        tree_attention: "auto" (default, or `$INTERCEPT_RL_TREE_ATTENTION`): keep the Hub kernel when it loads, else
            install the torch fallback; "torch": always the fallback; "kernel": never patch attention.

    Idempotent: a second call patches nothing new and returns the same list. Must run before the trainer is built
    (the peak-FLOPs probe runs in its `__init__`); the attention patch takes effect at the next forward.
    """
    from intercept_common.trl_api import async_grpo_trainer, packing

    mode = parse_choice(TreeAttention, (tree_attention or os.environ.get(TREE_ATTENTION_ENV) or "auto").lower(),
                        f"{TREE_ATTENTION_ENV} / tree_attention")

    patched = []
    if packing._flash_attn is _torch_flash_attn:
        patched.append(PATCHED_FLASH_ATTN)
    elif mode is TreeAttention.TORCH or (mode is TreeAttention.AUTO and not hub_flash_attention_loads()):
        packing._flash_attn = _torch_flash_attn
        patched.append(PATCHED_FLASH_ATTN)
        logger.info("tree attention: torch SDPA fallback installed")

    if async_grpo_trainer.get_peak_flops_per_device is _peak_flops_unknown:
        patched.append(PATCHED_PEAK_FLOPS)
    elif not torch.cuda.is_available():
        async_grpo_trainer.get_peak_flops_per_device = _peak_flops_unknown
        patched.append(PATCHED_PEAK_FLOPS)
    return patched


def trl_adapter_sync_prefix(trainer) -> str | None:
    """The name prefix of the LoRA adapters TRL publishes to vLLM (`{prefix}-v{N}` per sync), or None when it syncs
    full (merged) weights.

    TRL decides in `AsyncGRPOTrainer.__init__` (a PEFT model, no injected transfer, and a vLLM server started with
    `--enable-lora`) and keeps the decision and the prefix in private attributes; its own rollout worker derives the
    requested model from them, ours must too (`RolloutWorker.sample_from_adapters`). Pinned in test_cpu_compat.py.
    """
    if not getattr(trainer, "_lora_sync", False):
        return None
    return trainer._lora_name
