"""The local engine's generator: one worker thread that runs the model, batching the requests that wait together.

Why a thread: the forward passes are blocking torch calls; running them off the event loop keeps the HTTP side
responsive (health checks, pause, weight pushes) while a batch decodes.

Batching is continuous: between two decode steps, waiting requests (up to `max_batch_size` rows in all) are
prefilled and join the running batch; rows are left-padded to a common KV-cache length with masked-out padding and
per-row position ids, so each row computes exactly what it would alone. Rows leave the batch (and the cache) as they
finish, and their futures resolve at once.

Weights change only between steps: every forward and every weight update holds `_step_lock`. Like vLLM's
`/pause?mode=keep`, a paused engine freezes in-flight requests between steps and resumes them where they stopped;
a pause that outlasts `max_pause_s` fails the requests it holds with `EnginePausedError` instead of hanging them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicCache

from local_engine.kv_rows import merge_rows, trim_left
from local_engine.sampling import SamplingParams, choose_token, processed_logprobs

logger = logging.getLogger(__name__)


class EngineClosedError(RuntimeError):
    """The engine shut down before the request finished."""


class EnginePausedError(RuntimeError):
    """The engine stayed paused longer than `max_pause_s` while the request waited."""


class WeightUpdateError(ValueError):
    """A pushed state dict does not fit the served model (names, shapes, dtypes or values)."""


@dataclass
class GenerationResult:
    """What one request produced. `logprobs[i]` is the processed logprob of `token_ids[i]`."""

    token_ids: list[int]
    logprobs: list[float]
    top_logprobs: list[dict[int, float]]  # per token: the sampled token plus the `params.logprobs` most likely ones
    finish_reason: str  # "stop" (EOS or a stop token, included in token_ids), "length", or "abort"
    stop_reason: int | None  # the stop_token_id that ended it; None for EOS, length and abort (as vLLM)
    weights_version: int  # the engine's weights version when the last token was sampled


@dataclass(eq=False)  # identity semantics: jobs are looked up in lists
class _Job:
    prompt_ids: list[int]
    params: SamplingParams
    max_new_tokens: int
    future: concurrent.futures.Future
    generator: torch.Generator | None
    submitted_at: float = field(default_factory=time.monotonic)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] = field(default_factory=list)


def _resolve(future: concurrent.futures.Future, result=None, error: BaseException | None = None) -> None:
    """Set a future's outcome unless the caller already gave up on it (cancelled: the client went away)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


class BatchedGenerator:
    """Runs `model` in a worker thread; `submit` returns a `concurrent.futures.Future[GenerationResult]`."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        eos_token_ids: list[int],
        pad_token_id: int,
        max_batch_size: int = 8,
        seed: int = 0,
        max_pause_s: float = 600.0,
    ):
        self.model = model.eval().requires_grad_(False)
        self.eos_token_ids = frozenset(eos_token_ids)
        self.pad_token_id = pad_token_id
        self.max_batch_size = max_batch_size
        self.max_pause_s = max_pause_s
        self.weights_version = 0
        self.batch_sizes: collections.Counter[int] = collections.Counter()  # rows in batch -> decode steps run
        self.dropped_requests = 0  # requests whose caller gave up (client hung up) before they finished
        self._rng = torch.Generator().manual_seed(seed)  # used only by the worker thread, for unseeded requests
        self._state = self.model.state_dict()  # tensors sharing storage with the parameters (tied ones included)
        self._step_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: list[_Job] = []
        self._paused_at: float | None = None
        self._abort_active = False
        self._batch_running = False
        self._closing = False
        self._in_flight: list[_Job] = []  # jobs the worker thread holds; failed together if a forward raises
        self._thread = threading.Thread(target=self._loop, name="local-engine-generator", daemon=True)
        self._thread.start()

    # ---- requests -------------------------------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams, max_new_tokens: int) -> concurrent.futures.Future:
        """Queue one request; the caller validated ids and lengths. Cancel the future to drop the request."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        generator = None if params.seed is None else torch.Generator().manual_seed(params.seed % 2**64)
        job = _Job(list(prompt_ids), params, max_new_tokens, future, generator)
        with self._cond:
            if self._closing:
                raise EngineClosedError("the engine is shutting down")
            self._pending.append(job)
            self._cond.notify_all()
        return future

    @property
    def is_paused(self) -> bool:
        return self._paused_at is not None

    def pause(self, mode: str = "keep", timeout_s: float = 60.0) -> None:
        """Stop generating between steps. `keep` freezes in-flight requests, `wait` first lets the running batch
        finish, `abort` ends in-flight requests now (finish_reason "abort"). Returns once no step is running."""
        if mode not in ("keep", "wait", "abort"):
            raise ValueError(f"pause mode must be keep, wait or abort, got {mode!r}")
        with self._cond:
            if mode == "wait":
                deadline = time.monotonic() + timeout_s
                while self._batch_running or self._pending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"in-flight requests did not finish within {timeout_s:.0f}s")
                    self._cond.wait(min(left, 0.5))
            if self._paused_at is None:
                self._paused_at = time.monotonic()
            self._abort_active = mode == "abort"
            self._cond.notify_all()
        # Any step that started before the flag was set ends before this lock is free; later steps see the flag.
        if not self._step_lock.acquire(timeout=timeout_s):
            raise TimeoutError(f"the running generation step did not end within {timeout_s:.0f}s")
        self._step_lock.release()

    def resume(self) -> None:
        with self._cond:
            self._paused_at = None
            self._abort_active = False
            self._cond.notify_all()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the worker thread; waiting and in-flight requests fail with `EngineClosedError`."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout_s)

    # ---- weights --------------------------------------------------------------------------------------------
    def validate_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """Raise `WeightUpdateError` unless every tensor names a model tensor with the same shape and dtype."""
        if not tensors:
            raise WeightUpdateError("the weight update holds no tensors")
        unknown = sorted(set(tensors) - set(self._state))
        if unknown:
            raise WeightUpdateError(
                f"{len(unknown)} unknown tensor name(s), e.g. {unknown[:3]}; names must match the model's "
                f"state_dict (e.g. {sorted(self._state)[:2]})"
            )
        for name, tensor in tensors.items():
            target = self._state[name]
            if tuple(tensor.shape) != tuple(target.shape):
                raise WeightUpdateError(f"{name}: shape {tuple(tensor.shape)} != model's {tuple(target.shape)}")
            if tensor.dtype != target.dtype:
                raise WeightUpdateError(f"{name}: dtype {tensor.dtype} != model's {target.dtype}")
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise WeightUpdateError(f"{name}: holds NaN or infinite values")

    def update_weights(self, tensors: dict[str, torch.Tensor], version: int) -> int:
        """Validate, then copy `tensors` into the model between two generation steps. Returns the tensors applied."""
        self.validate_weights(tensors)
        with self._step_lock, torch.no_grad():
            for name, tensor in tensors.items():
                self._state[name].copy_(tensor)
            self.weights_version = int(version)
        logger.info("weights updated to version %d (%d tensors)", version, len(tensors))
        return len(tensors)

    # ---- the worker thread ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closing and (self._paused_at is not None or not self._pending):
                        self._expire_waiting_locked(self._pending)
                        self._cond.wait(0.5)
                    if self._closing:
                        break
                    self._batch_running = True
                try:
                    self._decode_until_idle()
                except Exception as error:  # a failed forward fails its requests, never the engine
                    logger.exception("generation failed")
                    for job in self._in_flight:
                        _resolve(job.future, error=RuntimeError(f"generation failed: {error}"))
                finally:
                    self._in_flight = []
                    with self._cond:
                        self._batch_running = False
                        self._cond.notify_all()
        finally:
            with self._cond:
                leftover, self._pending = self._pending, []
            for job in leftover:
                _resolve(job.future, error=EngineClosedError("the engine shut down"))

    def _expire_waiting_locked(self, jobs: list[_Job]) -> list[_Job]:
        """Fail the jobs that have waited on a pause longer than `max_pause_s`; return the others."""
        if self._paused_at is None:
            return jobs
        now, kept = time.monotonic(), []
        for job in jobs:
            if now - max(self._paused_at, job.submitted_at) > self.max_pause_s:
                _resolve(job.future, error=EnginePausedError(f"the engine stayed paused over {self.max_pause_s:.0f}s"))
            else:
                kept.append(job)
        if len(kept) != len(jobs) and jobs is self._pending:
            self._pending[:] = kept
        return kept

    def _hold_while_paused(self, active: list[_Job]) -> list[_Job]:
        """Block between steps while paused; return the jobs still to run (expired/aborted/cancelled removed)."""
        with self._cond:
            while self._paused_at is not None and not self._closing:
                if self._abort_active:
                    for job in active:
                        self._finish(job, "abort")
                    return []
                active = self._expire_waiting_locked(active)
                if not active:
                    return []
                self._cond.wait(0.5)
            if self._closing:
                for job in active:
                    _resolve(job.future, error=EngineClosedError("the engine shut down"))
                return []
        return self._drop_cancelled(active)

    def _drop_cancelled(self, jobs: list[_Job]) -> list[_Job]:
        kept = [job for job in jobs if not job.future.cancelled()]
        self.dropped_requests += len(jobs) - len(kept)
        return kept

    def _finish(self, job: _Job, reason: str, stop_reason: int | None = None) -> None:
        result = GenerationResult(
            job.token_ids, job.logprobs, job.top_logprobs, reason, stop_reason, self.weights_version
        )
        _resolve(job.future, result)

    def _sample_row(self, job: _Job, logits: torch.Tensor) -> bool:
        """Sample the next token of `job` from its last-position logits; return True when the job is done."""
        logprobs = processed_logprobs(logits, job.params)
        token = choose_token(logprobs, job.params, job.generator or self._rng)
        job.token_ids.append(token)
        job.logprobs.append(float(logprobs[token]))
        top = {token: float(logprobs[token])}
        if job.params.logprobs:
            values, ids = torch.topk(logprobs, job.params.logprobs)
            top.update({int(i): float(v) for i, v in zip(ids, values)})
        job.top_logprobs.append(top)
        if token in job.params.stop_token_ids:
            self._finish(job, "stop", stop_reason=token)
        elif token in self.eos_token_ids and not job.params.ignore_eos:
            self._finish(job, "stop")
        elif len(job.token_ids) >= job.max_new_tokens:
            self._finish(job, "length")
        else:
            return False
        return True

    def _admit(self, running: int) -> list[_Job]:
        """Take waiting jobs into the batch, as many as fit, unless paused or closing."""
        with self._cond:
            if self._paused_at is not None or self._closing or running >= self.max_batch_size:
                return []
            jobs = self._pending[: self.max_batch_size - running]
            del self._pending[: len(jobs)]
        self._in_flight = [job for job in self._in_flight if not job.future.done()] + jobs
        return self._drop_cancelled(jobs)

    def _forward(self, input_ids, attention_mask, position_ids, cache) -> torch.Tensor | None:
        """One forward under the step lock; None when paused or closing (the pause flag is read under the lock,
        so `pause()` returning means no step is running)."""
        with self._step_lock:
            if self._paused_at is not None or self._closing:
                return None
            outputs = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,  # never materialise [batch, seq, vocab] logits for the prompt
            )
        return outputs.logits[:, -1]

    def _prefill(self, jobs: list[_Job]) -> tuple[list[_Job], DynamicCache, torch.Tensor] | None:
        """Run the prompts of `jobs` (left-padded together) and sample their first tokens; None if paused."""
        width = max(len(job.prompt_ids) for job in jobs)
        input_ids = torch.full((len(jobs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):  # left padding: every row's last prompt token sits in the last column
            input_ids[row, width - len(job.prompt_ids) :] = torch.tensor(job.prompt_ids)
            mask[row, width - len(job.prompt_ids) :] = 1
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(input_ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), cache)
        if logits is None:
            return None
        still = self._drop_cancelled([job for row, job in enumerate(jobs) if not self._sample_row(job, logits[row])])
        index = torch.tensor([jobs.index(job) for job in still], dtype=torch.long)
        cache.batch_select_indices(index)
        return still, cache, mask[index]

    @torch.inference_mode()
    def _decode_until_idle(self) -> None:
        """Continuous batching: waiting jobs are prefilled and join the running batch between decode steps.

        Every row always holds one sampled token not yet fed to the model. Rows are left-padded to a common cache
        length; padded key/value slots are masked out, so they contribute exactly nothing to attention.
        """
        self._in_flight: list[_Job] = []
        active: list[_Job] = []
        cache: DynamicCache | None = None
        mask = torch.zeros((0, 0), dtype=torch.long)
        while True:
            admitted = self._admit(len(active))
            if admitted:
                prefilled = self._prefill(admitted)
                if prefilled is None:  # paused between admission and prefill: put them back, first in line
                    with self._cond:
                        self._pending[:0] = admitted
                    self._in_flight = [job for job in self._in_flight if job not in admitted]
                elif prefilled[0]:
                    active, cache, mask = merge_rows(active, cache, mask, *prefilled)
            if not active:
                with self._cond:
                    if not self._pending or self._paused_at is not None or self._closing:
                        return
                continue
            self.batch_sizes[len(active)] += 1
            step_mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long)], dim=1)
            positions = torch.tensor([[len(job.prompt_ids) + len(job.token_ids) - 1] for job in active])
            tokens = torch.tensor([[job.token_ids[-1]] for job in active])
            logits = self._forward(tokens, step_mask, positions, cache)
            if logits is not None:
                mask = step_mask
                still = [job for row, job in enumerate(active) if not self._sample_row(job, logits[row])]
                still = self._drop_cancelled(still)
            else:
                still = self._hold_while_paused(active)
            if len(still) != len(active):  # finished rows leave the batch and the KV cache
                index = torch.tensor([active.index(job) for job in still], dtype=torch.long)
                cache.batch_select_indices(index)
                mask, active = mask[index], still
                cache, mask = trim_left(cache, mask)

