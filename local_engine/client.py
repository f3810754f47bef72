"""The trainer's side of the local engine's weight push (`POST /update_weights`, see `local_engine.server`)."""

from __future__ import annotations

from collections.abc import Iterable

import requests
import torch
from safetensors.torch import save as save_safetensors

WEIGHTS_VERSION_HEADER = "X-Weights-Version"  # or the `version` query parameter


def serialize_weights(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> bytes:
    """Safetensors bytes of the (name, tensor) pairs, copied to CPU.

    Tensors sharing storage (tied embeddings) are cloned: safetensors refuses aliased tensors.
    """
    tensors: dict[str, torch.Tensor] = {}
    seen_storage: set[int] = set()
    for name, tensor in named_tensors:
        if name in tensors:
            raise ValueError(f"tensor {name!r} appears twice in the weight update")
        tensor = tensor.detach().to("cpu")
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen_storage or not tensor.is_contiguous():
            tensor = tensor.contiguous().clone()
        seen_storage.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor
    if not tensors:
        raise ValueError("a weight update needs at least one tensor")
    return save_safetensors(tensors)


def push_weights(
    url: str, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int, timeout: float = 600.0
) -> dict:
    """Send a full or partial state dict to the local engine at `url`; it applies it between generation steps.

    Returns the engine's JSON answer (`{"status": "ok", "version": …, "tensors": …}`); raises `RuntimeError` with the
    engine's message when it refuses the update (unknown names, wrong shapes or dtypes).
    """
    body = serialize_weights(named_tensors)
    response = requests.post(
        f"{url.rstrip('/')}/update_weights",
        data=body,
        params={"version": str(int(version))},
        headers={"Content-Type": "application/octet-stream", WEIGHTS_VERSION_HEADER: str(int(version))},
        timeout=timeout,
    )
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:500]
        raise RuntimeError(f"the engine refused weights version {version} (HTTP {response.status_code}): {message}")
    return response.json()


def get_weights_version(url: str, timeout: float = 30.0) -> int:
    """The version of the weights the engine serves (0 = as loaded)."""
    response = requests.get(f"{url.rstrip('/')}/weights_version", timeout=timeout)
    response.raise_for_status()
    return int(response.json()["version"])
