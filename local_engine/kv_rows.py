"""Row surgery on a batched KV cache (transformers' `DynamicCache`) for continuous batching.

Rows of different lengths share one cache, left-padded: padded key/value slots are zeros under a 0 attention-mask
entry, so they contribute exactly nothing. This touches `DynamicLayer.keys/values` ([batch, heads, T, head_dim]),
the one place that depends on the cache's layout; the engine's exactness tests pin it.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache


def _pad_left(tensor: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def merge_rows(active: list, cache: DynamicCache | None, mask: torch.Tensor, new_jobs: list, new_cache: DynamicCache,
               new_mask: torch.Tensor) -> tuple[list, DynamicCache, torch.Tensor]:
    """Append freshly prefilled rows to the running batch, left-padding whichever side is shorter."""
    if not active:
        return new_jobs, new_cache, new_mask
    length = max(mask.shape[1], new_mask.shape[1])
    for layer, new_layer in zip(cache.layers, new_cache.layers):  # DynamicLayer: keys/values [batch, heads, T, dim]
        layer.keys = torch.cat([_pad_left(layer.keys, 2, length), _pad_left(new_layer.keys, 2, length)])
        layer.values = torch.cat([_pad_left(layer.values, 2, length), _pad_left(new_layer.values, 2, length)])
    mask = torch.cat([_pad_left(mask, 1, length), _pad_left(new_mask, 1, length)])
    return active + new_jobs, cache, mask


def trim_left(cache: DynamicCache, mask: torch.Tensor) -> tuple[DynamicCache, torch.Tensor]:
    """Drop leading cache columns that no remaining row attends to (left by rows that finished)."""
    if mask.numel() == 0:
        return cache, mask
    used = mask.any(dim=0).nonzero()
    first = int(used[0]) if len(used) else mask.shape[1]
    if first == 0:
        return cache, mask
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
    return cache, mask[:, first:]
