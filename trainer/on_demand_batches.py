"""Pull each training batch from the rollout queue only when the trainer is about to train on it.

Why: accelerate's prepared dataloaders (`DataLoaderDispatcher`, which TRL's `AsyncGRPOTrainer` gets because its config
forces `dispatch_batches=True`, and `DataLoaderShard` alike) iterate ONE BATCH AHEAD: asking for batch k first fetches
batch k+1, to learn whether k is the last. For a finite dataset that is harmless. For AsyncGRPO it moves the moment a
sample leaves the rollout queue (where TRL checks and logs its staleness) to BEFORE the optimizer step and weight sync
that precede its training. So the micro-batch that opens step N+1 is dequeued at policy version v, checked as
"staleness 0", and then trained after the sync to v+1: every such sample is one version staler than `max_staleness`
allows and than `sample/staleness_*` report. With one micro-batch per step (the CPU demo), that is every sample
after the first step, and `max_staleness=0` never trains on-policy. Measured (CPU demo, peaked tiny model, lr 1e-2):
logged ratio 0.268 / kl 4.32 at step 2 with `staleness_mean` 0 — to 7 digits the ratio of the version-1 group it
trained on under the step-1 weights. `tests/trainer/test_trainer_fidelity_after_update.py` pins it.

[`OnDemandBatches`] wraps the prepared loader and iterates its underlying DataLoader without the lookahead, doing the
dispatch itself (rank 0 fetches, broadcasts, each rank keeps its row) like `DataLoaderDispatcher` with
`split_batches=True`. [`fetch_batches_on_demand`] installs it on a trainer. The rollout stream never ends, so the
lookahead's only purpose (flagging the last batch) does not arise.

Not covered: with `token_budget > 0`, TRL's `TokenBudgetBatcher` itself dequeues the sample that closes a micro-batch
one micro-batch early (it must see a sample that does not fit); that one sample per micro-batch can still be trained
one version staler than checked. The CPU demo uses the fixed-count batcher (`token_budget=0`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from accelerate import PartialState
from accelerate.data_loader import DataLoaderDispatcher
from accelerate.utils import (
    broadcast,
    broadcast_object_list,
    find_batch_size,
    get_data_structure,
    initialize_tensors,
    send_to_device,
    slice_tensors,
)


class OnDemandBatches:
    """An accelerate-prepared training dataloader, iterated without its one-batch lookahead.

    Args:
        prepared: what `accelerator.prepare(DataLoader(...))` returned (a `DataLoaderDispatcher` under TRL's AsyncGRPO
            config). Its `base_dataloader` is iterated directly; its `begin()`/`end()` still register it with
            accelerate's `GradientState` for the duration of an iteration; anything else is delegated to it.

    Batches are dispatched as with `split_batches=True`: the main process's batch holds one row per process (TRL's
    collator pads its `num_processes` rows into one rectangular batch); every process receives row `process_index`.
    Like any `IterableDataset` loader it has no length, so the Trainer runs on `max_steps`.
    """

    def __init__(self, prepared: Any):
        if not isinstance(prepared, DataLoaderDispatcher) or not prepared.split_batches:
            # The dispatch below reproduces `dispatch_batches=True, split_batches=True` (what AsyncGRPOConfig forces);
            # any other loader would be split differently across ranks.
            raise TypeError(f"OnDemandBatches wraps a DataLoaderDispatcher with split_batches=True, got "
                            f"{type(prepared).__name__}")
        self.prepared = prepared
        self.base_dataloader = prepared.base_dataloader
        self.state = PartialState()
        self.batches_fetched = 0  # how many batches this loader has pulled from its source (tests, debugging)

    def __iter__(self) -> Iterator[Any]:
        # Every process creates the base iterator: with torch.distributed up, `DataLoader.__iter__` shares a seed
        # across ranks (a collective), exactly as `DataLoaderDispatcher.__iter__` does it.
        source = iter(self.base_dataloader)
        self.prepared.begin()
        try:
            while True:
                batch = self._next_batch(source)
                if batch is None:
                    return
                yield batch
        finally:
            self.prepared.end()

    def _next_batch(self, source: Iterator[Any]) -> Any | None:
        """One batch for this process, fetched now; None once the main process's source is exhausted."""
        batch, structure = None, None
        if self.state.is_main_process:
            try:
                batch = next(source)
                self.batches_fetched += 1
                structure = get_data_structure(batch)
            except StopIteration:
                structure = None
        if self.state.num_processes == 1:
            return None if batch is None else send_to_device(batch, self.state.device)
        info = [structure]
        broadcast_object_list(info)  # in place: every process learns the batch's structure (or the end)
        if info[0] is None:
            return None
        if not self.state.is_main_process:
            batch = initialize_tensors(info[0])
        batch = broadcast(send_to_device(batch, self.state.device), from_process=0)
        rows = find_batch_size(batch) // self.state.num_processes
        index = self.state.process_index
        return slice_tensors(batch, slice(index * rows, (index + 1) * rows))

    def set_epoch(self, epoch: int) -> None:
        self.prepared.set_epoch(epoch)

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not set above; keeps e.g. `total_batch_size` or `gradient_state` working.
        if name == "prepared":  # not set yet (copy/unpickle): do not recurse
            raise AttributeError(name)
        return getattr(self.prepared, name)


def fetch_batches_on_demand(trainer: Any) -> None:
    """Make `trainer` (a TRL AsyncGRPOTrainer) pull each batch from its rollout queue only when it trains on it.

    Wraps the trainer's own `get_train_dataloader` on the instance, so TRL builds its planner, collator and prepared
    loader unchanged and only the iteration order of fetch vs. train changes. Idempotent.
    """
    if getattr(trainer.get_train_dataloader, "_fetches_on_demand", False):
        return
    build_prepared = trainer.get_train_dataloader

    def get_train_dataloader():
        return OnDemandBatches(build_prepared())

    get_train_dataloader._fetches_on_demand = True
    trainer.get_train_dataloader = get_train_dataloader
