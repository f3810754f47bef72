"""Weight sync from the trainer to the engine that generates rollouts (design §4, §5).

The local engine's backend; vLLM's (`nccl`, `ipc`, `disk`, `lora`) are in `trainer/vllm_weight_sync.py`.

* **Local engine** (CPU, tests, CI): [`LocalEngineWeightTransfer`] implements TRL's `WeightTransferProtocol` over the
  engine's HTTP endpoints: `POST /pause`, one versioned `POST /update_weights` carrying the whole iterator (via
  `local_engine.client.push_weights`), `POST /resume`. TRL calls it from `_sync_weight_merged`, which has already
  folded a LoRA adapter into the base weights and hands us `_iter_vllm_named_params`'s stream: base-checkpoint names
  (`base_model.model.` / `.base_layer` stripped, `lora_*` tensors skipped). So the engine always receives MERGED
  weights under the names of the plain HF model — `tests/trainer/test_weight_sync.py` proves it by comparing logprobs.

* **vLLM** (GPU): `--vllm-weight-sync` picks the backend; `trainer.vllm_weight_sync` has the table and
  `vllm_serve_command`, which renders the matching launch line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import requests
import torch

from intercept_common.errors import UserError

logger = logging.getLogger(__name__)


def counting(iterator: Iterator[tuple[str, torch.Tensor]], stats: dict[str, int]):
    """Pass (name, tensor) pairs through, adding each to `stats["tensors"]` and its size to `stats["bytes"]`."""
    for name, tensor in iterator:
        stats["tensors"] += 1
        stats["bytes"] += tensor.numel() * tensor.element_size()
        yield name, tensor


def wait_until_healthy(session: requests.Session, engine_url: str, timeout_s: float,
                       poll_s: float = 0.5) -> str | None:
    """Poll `GET /health` until it answers 200 (None) or `timeout_s` passes (the last problem seen)."""
    deadline = time.monotonic() + timeout_s
    problem = "no answer"
    while time.monotonic() < deadline:
        try:
            response = session.get(f"{engine_url}/health", timeout=5)
            if response.status_code == 200:
                return None
            problem = f"HTTP {response.status_code}"
        except requests.RequestException as error:
            problem = f"{type(error).__name__}: {error}"
        time.sleep(poll_s)
    return problem


class WeightTransferError(RuntimeError, UserError):
    """The engine refused or failed a pause / push / resume; training must stop rather than drift silently."""


class LocalEngineWeightTransfer:
    """TRL `WeightTransferProtocol` for the local engine: pause, push every tensor as one versioned update, resume.

    Args:
        engine_url: base URL of the local engine (`http://host:port`, no `/v1`).
        timeout_s: bound on the push (the whole model in one request) and on the readiness wait.
        control_timeout_s: bound on `/pause` and `/resume`.
        first_version: the version the next push carries minus one. TRL counts syncs from 0 in every process (its
            resume path restores `model_version` only for its own worker), so 0 keeps the engine's version equal to
            the trainer's `model_version` after each sync.
    """

    def __init__(
        self,
        engine_url: str,
        *,
        timeout_s: float = 600.0,
        control_timeout_s: float = 60.0,
        first_version: int = 0,
    ):
        self.engine_url = engine_url.rstrip("/")
        self.timeout_s = timeout_s
        self.control_timeout_s = control_timeout_s
        self.version = first_version
        self.last_push: dict[str, float] = {}  # tensors / bytes / seconds of the last push, for logs and tests
        self._session: requests.Session | None = None

    # -- WeightTransferProtocol ------------------------------------------------------------------------------------

    def init_weight_transfer(self) -> None:
        """Wait (bounded) until the engine answers `/health`; there is no transfer group to build over HTTP."""
        problem = wait_until_healthy(self._http(), self.engine_url, self.timeout_s)
        if problem is not None:
            raise WeightTransferError(f"local engine at {self.engine_url} not healthy after {self.timeout_s:.0f} s "
                                      f"({problem})")

    def pause(self) -> None:
        self._control("pause")

    def send_weights(self, iterator: Iterator[tuple[str, torch.Tensor]]) -> None:
        """Push everything `iterator` yields as ONE versioned update, so the engine never serves a half-synced model.

        TRL un-merges a LoRA adapter right after this returns, so the tensors are serialized before returning.
        """
        from local_engine.client import push_weights

        version = self.version + 1
        stats = {"tensors": 0, "bytes": 0}

        start = time.perf_counter()
        try:
            on_cpu = ((name, tensor.detach().to("cpu")) for name, tensor in counting(iterator, stats))
            push_weights(self.engine_url, on_cpu, version=version, timeout=self.timeout_s)
        except Exception as error:
            raise WeightTransferError(
                f"pushing weights version {version} to the local engine at {self.engine_url} failed: {error}"
            ) from error
        self.version = version
        self.last_push = {**stats, "seconds": time.perf_counter() - start, "version": version}
        logger.info(
            "weight sync v%d: %d tensors, %.1f MB in %.2f s",
            version, stats["tensors"], stats["bytes"] / 1e6, self.last_push["seconds"],
        )

    def resume(self) -> None:
        self._control("resume")

    def destroy(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # -- helpers ---------------------------------------------------------------------------------------------------

    def _http(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
        return self._session

    def _control(self, action: str) -> None:
        try:
            response = self._http().post(f"{self.engine_url}/{action}", timeout=self.control_timeout_s)
        except requests.RequestException as error:
            raise WeightTransferError(f"{action} of the local engine at {self.engine_url} failed: {error}") from error
        if response.status_code != 200:
            raise WeightTransferError(
                f"{action} of the local engine at {self.engine_url} answered HTTP {response.status_code}: "
                f"{response.text[:500]}"
            )


class ReplicatedWeightTransfer:
    """Several local engine replicas as one TRL `WeightTransferProtocol` (`train --engine-replicas N`).

    TRL pauses, sends, resumes, and only then hands the new version to the worker (`update_model_version`). So every
    replica is paused before any receives, each gets the same tensors (TRL's iterator is consumed once: they are
    held on the CPU for the 2nd..Nth push), each is checked to hold the new version (`/weights_version`), and only
    then are they resumed: no replica samples under the new version number before every replica has its weights.
    """

    def __init__(self, transfers: list[LocalEngineWeightTransfer]):
        if not transfers:
            raise ValueError("ReplicatedWeightTransfer needs at least one replica")
        self.transfers = transfers

    @property
    def version(self) -> int:
        return self.transfers[0].version

    @version.setter
    def version(self, value: int) -> None:  # a resumed run continues the checkpoint's count on every replica
        for transfer in self.transfers:
            transfer.version = value

    @property
    def last_push(self) -> dict[str, float]:
        return self.transfers[0].last_push

    def init_weight_transfer(self) -> None:
        for transfer in self.transfers:
            transfer.init_weight_transfer()

    def pause(self) -> None:
        for transfer in self.transfers:
            transfer.pause()

    def send_weights(self, iterator: Iterator[tuple[str, torch.Tensor]]) -> None:
        from local_engine.client import get_weights_version

        held = [(name, tensor.detach().to("cpu")) for name, tensor in iterator]
        for transfer in self.transfers:
            transfer.send_weights(iter(held))
        versions = {}
        for transfer in self.transfers:
            url = transfer.engine_url
            try:
                versions[url] = get_weights_version(url, timeout=transfer.control_timeout_s)
            except requests.RequestException as error:
                raise WeightTransferError(f"reading the weights version of {url} failed: {error}") from error
        wanted = self.transfers[0].version
        if any(v != wanted for v in versions.values()):
            raise WeightTransferError(f"after weight sync v{wanted} the replicas hold versions {versions}: refusing to "
                                      "announce a version not every replica serves")

    def resume(self) -> None:
        for transfer in self.transfers:
            transfer.resume()

    def destroy(self) -> None:
        for transfer in self.transfers:
            transfer.destroy()
