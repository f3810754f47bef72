"""Fidelity AFTER the first optimizer step: with `max_staleness=0` every step trains on samples of the policy it is at.

The bug this pins (issue 5, F1/F2): accelerate's prepared dataloader fetches one batch ahead, so TRL dequeued (and
staleness-checked) the batch of step N+1 before step N's optimizer step and weight sync. Logged `ratio` was 1 at
step 1 only; at later steps it was the previous version's ratio under the new weights (0.27 at step 2 of a CPU demo
run on a peaked model) while `sample/staleness_mean` said 0. `trainer/on_demand_batches.py` fixes it.
"""

from __future__ import annotations

import math

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from torch.utils.data import DataLoader, IterableDataset

from tests.paths import REPO
from trainer.on_demand_batches import OnDemandBatches, fetch_batches_on_demand


class CountingStream(IterableDataset):
    """A rollout-queue stand-in: batch i is `{"input_ids": [[i, i]], ...}`; counts how many batches were pulled."""

    def __init__(self, length: int | None = None):
        self.length = length
        self.pulled = 0

    def __iter__(self):
        i = 0
        while self.length is None or i < self.length:
            self.pulled += 1
            yield {"input_ids": torch.tensor([[i, i]]), "old_log_probs": torch.tensor([[float(i), 0.5]])}
            i += 1


def _prepared(stream: CountingStream):
    """The loader TRL's AsyncGRPOTrainer gets: `dispatch_batches=True, split_batches=True` (AsyncGRPOConfig forces it),
    batch_size=1 over pre-collated items."""
    accelerator = Accelerator(dataloader_config=DataLoaderConfiguration(dispatch_batches=True, split_batches=True),
                              cpu=True)
    return accelerator.prepare(DataLoader(stream, batch_size=1, collate_fn=_only_item, num_workers=0))


def _only_item(items):  # TRL's collator likewise gets a length-1 list holding one pre-built micro-batch
    (item,) = items
    return item


def test_accelerate_dispatcher_fetches_one_batch_ahead():
    """The cause, pinned: after handing out k batches, accelerate's dispatcher has pulled k + 1 from the stream. If an
    accelerate upgrade drops the lookahead this fails, and `OnDemandBatches` may no longer be needed."""
    stream = CountingStream()
    loader = _prepared(stream)
    assert type(loader).__name__ == "DataLoaderDispatcher"
    iterator = iter(loader)
    for k in range(1, 4):
        next(iterator)
        assert stream.pulled == k + 1


def test_on_demand_batches_pull_only_what_is_handed_out():
    reference = [batch for batch in _prepared(CountingStream(length=5))]
    stream = CountingStream(length=5)
    loader = OnDemandBatches(_prepared(stream))
    iterator = iter(loader)
    got = []
    for k in range(1, 6):
        got.append(next(iterator))
        assert stream.pulled == k, "a batch was pulled before the trainer asked for it"
        assert loader.batches_fetched == k
    with pytest.raises(StopIteration):
        next(iterator)
    assert len(got) == len(reference) == 5
    for ours, theirs in zip(got, reference, strict=True):
        assert ours.keys() == theirs.keys()
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)
    # Like every IterableDataset loader it has no length, so HF's Trainer keeps to max_steps.
    with pytest.raises(TypeError):
        len(loader)


def test_on_demand_batches_refuse_a_loader_they_would_split_wrongly():
    with pytest.raises(TypeError, match="DataLoaderDispatcher"):
        OnDemandBatches(DataLoader(CountingStream(length=1), batch_size=1, collate_fn=_only_item))
    plain = Accelerator(dataloader_config=DataLoaderConfiguration(dispatch_batches=False), cpu=True)
    with pytest.raises(TypeError, match="DataLoaderDispatcher"):
        OnDemandBatches(plain.prepare(DataLoader(CountingStream(length=1), batch_size=1, collate_fn=_only_item)))


TWO_RANK_SCRIPT = """
import json, os, torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from torch.utils.data import DataLoader, IterableDataset
from trainer.on_demand_batches import OnDemandBatches

class Stream(IterableDataset):
    pulled = 0
    def __iter__(self):
        for i in range(4):
            Stream.pulled += 1
            yield {"x": torch.tensor([[10 * i + rank, -1] for rank in range(2)])}  # one row per rank, like TRL's

accelerator = Accelerator(dataloader_config=DataLoaderConfiguration(dispatch_batches=True, split_batches=True),
                          cpu=True)
loader = OnDemandBatches(accelerator.prepare(DataLoader(Stream(), batch_size=1, collate_fn=lambda items: items[0])))
seen, pulls = [], []
for batch in loader:
    seen.append(batch["x"].tolist())
    pulls.append(Stream.pulled)
# One file per rank: both ranks printing to the shared stdout can interleave their lines.
with open(os.path.join(os.environ["RESULT_DIR"], f"rank{accelerator.process_index}.json"), "w") as out:
    json.dump({"rank": accelerator.process_index, "seen": seen, "pulls": pulls}, out)
# Tear gloo down before the interpreter exits: left to exit-time destructors it sometimes aborts rank 0 (SIGABRT,
# "terminate called without an active exception") after the results are printed.
accelerator.wait_for_everyone()
import torch.distributed
torch.distributed.destroy_process_group()
"""


def test_on_demand_batches_dispatch_one_row_per_rank(tmp_path):
    """Two CPU ranks (gloo) under torchrun: rank 0 pulls each batch only when handed out, every rank gets its own row,
    and both stop together when the stream ends (no rank left waiting in a collective)."""
    import json
    import os
    import socket
    import subprocess
    import sys

    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANK_SCRIPT)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(port), str(script)],
        capture_output=True, text=True, timeout=180, cwd=REPO, env={**os.environ, "RESULT_DIR": str(results_dir)},
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = {r["rank"]: r for r in (json.loads(path.read_text()) for path in sorted(results_dir.glob("*.json")))}
    assert set(results) == {0, 1}
    for rank in (0, 1):
        assert results[rank]["seen"] == [[[10 * i + rank, -1]] for i in range(4)]
    assert results[0]["pulls"] == [1, 2, 3, 4]  # no lookahead on the rank that owns the queue


def test_fetch_batches_on_demand_wraps_the_trainers_loader_once():
    class FakeTrainer:  # only the method the Trainer loop calls
        def get_train_dataloader(self):
            return _prepared(CountingStream(length=1))

    trainer = FakeTrainer()
    fetch_batches_on_demand(trainer)
    first = trainer.get_train_dataloader
    fetch_batches_on_demand(trainer)
    assert trainer.get_train_dataloader is first
    assert isinstance(trainer.get_train_dataloader(), OnDemandBatches)


# ---------------------------------------------------------------------------------------------------------------------
# The real thing: TRL's AsyncGRPOTrainer on a peaked tiny model, samples from the real local engine, weights pushed
# to it after every step, max_staleness=0. Every step must score its batch with exactly the generating policy.
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def peaked_model_dir(tmp_path_factory):
    """Large init scale: peaked distributions, so one lr-1e-2 step moves log-probs by whole nats (a one-version-stale
    batch then shows a ratio far from 1, as in the reported run)."""
    from local_engine.embedded import build_tiny_model

    target = tmp_path_factory.mktemp("peaked")
    build_tiny_model(target, initializer_range=0.5)
    return target


@pytest.fixture(scope="module")
def peaked_engine(peaked_model_dir):
    from intercept_common.engine_process import LocalEngineProcess

    with LocalEngineProcess(str(peaked_model_dir), served_model_name="policy", max_model_len=4096) as proc:
        yield proc


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_step_trains_on_policy_with_max_staleness_zero(peaked_engine, peaked_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from tests.trainer.test_trainer_helpers import PROMPTS, EngineSampleWorker, ProbingWeightTransfer
    from trainer.config import parse_train_args
    from trainer.train_swe_async_grpo import TrainArgs, build_trainer

    steps = 3
    script, training = parse_train_args([
        "--model-name-or-path", str(peaked_model_dir), "--output-dir", str(tmp_path / "out"), "--report-to", "none",
        "--save-strategy", "no", "--token-budget", "0", "--per-device-train-batch-size", "4",
        "--num-generations", "4", "--temperature", "1.0", "--max-staleness", "0", "--weight-sync-steps", "1",
        "--learning-rate", "1e-2", "--max-steps", str(steps), "--logging-steps", "1", "--seed", "0",
        "--dtype", "float32", "--bf16", "false",
    ])
    tokenizer = AutoTokenizer.from_pretrained(peaked_model_dir)
    probe_prompt = tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True, tokenize=True,
                                                 return_dict=False)
    worker = EngineSampleWorker(peaked_engine.url, tokenizer, num_generations=4, max_tokens=4, queue_target=8)
    transfer = ProbingWeightTransfer(peaked_engine.url, probe_prompt, probe_tokens=8)
    trainer = build_trainer(TrainArgs(script, training), worker, transfer)
    transfer.model = trainer.model
    trainer.train()

    logs = [entry for entry in trainer.state.log_history if "ratio" in entry]
    print("per step (ratio, kl, staleness_mean, dropped_stale):",
          [(e["ratio"], e["kl"], e.get("sample/staleness_mean"), e.get("sample/dropped_stale_total")) for e in logs])
    print("engine vs trainer after each sync:", [f"{p['max_abs_diff']:.1e}" for p in transfer.probes])
    assert [e["step"] for e in logs] == list(range(1, steps + 1))
    # The policy really moved between versions: the engine's log-probs of the same probe tokens changed by far more
    # than the tolerance below, so a batch one version stale could not pass.
    assert len(transfer.probes) == steps + 1
    for probe in transfer.probes:
        assert probe["max_abs_diff"] <= 1e-4, probe  # F2 holds at every sync
    moved = trainer_logprob_shift(trainer.model, transfer.probe_prompt_ids, transfer.probes[0])
    assert moved > 0.1, f"training barely moved the policy ({moved:.3g} nats); the test would prove nothing"
    for entry in logs:
        assert math.isclose(entry["ratio"], 1.0, abs_tol=1e-3), entry
        assert abs(entry["kl"]) <= 1e-5, entry
        assert entry["sample/staleness_max"] == 0.0, entry


def trainer_logprob_shift(model, prompt_ids: list[int], probe: dict) -> float:
    """Largest change, in nats, between the version-1 engine log-probs of a probe's tokens and the final trainer's."""
    from tests.trainer.test_trainer_helpers import trainer_logprobs

    now = trainer_logprobs(model, prompt_ids + probe["ids"])[len(prompt_ids) - 1:]
    return float((now - probe["engine"]).abs().max())
