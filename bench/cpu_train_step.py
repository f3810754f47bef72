"""CPU training step: seconds per optimizer step and trained tokens/s on the embedded tiny model, full and LoRA.

Real TRL `AsyncGRPOTrainer` steps built by our `trainer.train_swe_async_grpo.build_trainer` (cpu_compat's torch
tree attention, TRL's fused LM head, AdamW), fed by a stand-in rollout worker: GRPO groups of 4 samples, each a
prompt (mask 0) and a sampled completion (mask 1) of budget/8 tokens each, so every step packs one row of exactly
`token_budget` tokens, half of them trained. Weight sync goes to a stand-in that consumes the tensors (for LoRA, TRL
still merges and unmerges the adapter, which is part of its step).

Baseline, same run: a plain torch step on the same tokens — the HF model's forward with labels (full logits),
backward, AdamW step — on an identical model (and LoRA adapter). Step 1 of either is warm-up and not counted.

    python bench/cpu_train_step.py [--quick] [--budgets 512 2048] [--modes full lora]
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.report import machine_line, table  # noqa: E402

GROUP = 4


class StandinSampleWorker:
    """TRL `RolloutWorkerProtocol`: keeps the queue topped up with synthetic GRPO groups (no engine, no agents)."""

    def __init__(self, sample_len: int, vocab: int, seed: int = 0):
        self.sample_len = sample_len
        self.vocab = vocab
        self.rng = np.random.default_rng(seed)
        self.rollout_buffer: queue.Queue = queue.Queue()
        self.metrics_queue: queue.Queue = queue.Queue()
        self.model_version = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._group = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._fill, name="standin-sample-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def update_model_version(self, model_version: int) -> None:
        self.model_version = model_version

    def check_health(self, stale_after_s: float) -> None:
        if self._thread is not None and not self._thread.is_alive() and not self._stop.is_set():
            raise RuntimeError("stand-in sample worker died")

    def _fill(self) -> None:
        from intercept_common.trl_api import RolloutSample

        half = self.sample_len // 2
        while not self._stop.is_set():
            if self.rollout_buffer.qsize() >= 4 * GROUP:
                self._stop.wait(0.01)
                continue
            advantages = [1.0, -1.0, 0.5, -0.5]
            for k in range(GROUP):
                ids = self.rng.integers(0, self.vocab, size=self.sample_len, dtype=np.int64)
                mask = np.concatenate([np.zeros(half, np.int64), np.ones(self.sample_len - half, np.int64)])
                logprobs = np.where(mask == 1, -11.9, 0.0).astype(np.float32)  # ~ log(1/vocab): ratio near 1
                self.rollout_buffer.put(RolloutSample(
                    prompt=[{"role": "user", "content": "bench"}], completion=[{"role": "assistant", "content": ""}],
                    input_ids=ids, completion_mask=mask, old_log_probs=logprobs, advantage=advantages[k],
                    model_version=self.model_version, group_id=self._group, metrics={"reward": advantages[k]},
                    enqueued_at=time.time()))
            self._group += 1


class NullWeightTransfer:
    """TRL `WeightTransferProtocol` that consumes every tensor and keeps nothing (no engine to update)."""

    tensors = 0

    def init_weight_transfer(self) -> None:
        pass

    def pause(self) -> None:
        pass

    def send_weights(self, iterator) -> None:
        for _ in iterator:
            self.tensors += 1

    def resume(self) -> None:
        pass

    def destroy(self) -> None:
        pass


def trl_steps(model_dir: str, budget: int, lora: bool, steps: int) -> dict:
    """Run `steps` real AsyncGRPOTrainer steps; returns per-step wall seconds (after step 1) and TRL's own metrics."""
    from transformers import TrainerCallback

    from trainer.config import parse_train_args
    from trainer.train_swe_async_grpo import TrainArgs, build_trainer

    ends: list[tuple[float, float]] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append((time.perf_counter(), time.process_time()))

    with tempfile.TemporaryDirectory(prefix="bench-train-") as out:
        argv = ["--model-name-or-path", model_dir, "--output-dir", out, "--max-steps", str(steps),
                "--token-budget", str(budget), "--max-model-len", str(budget), "--num-generations", str(GROUP),
                "--gradient-accumulation-steps", "1", "--learning-rate", "1e-5", "--dtype", "float32",
                "--bf16", "false", "--report-to", "none", "--logging-steps", "1", "--save-steps", "1000000",
                "--seed", "0", "--max-staleness", "1000", "--tree-attention", "torch"]
        if lora:
            argv.append("--use-peft")
        script, training = parse_train_args(argv)
        worker = StandinSampleWorker(budget // GROUP, vocab=151_000)
        trainer = build_trainer(TrainArgs(script, training), worker, NullWeightTransfer(), callbacks=[StepClock()])
        started = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - started
        history = trainer.state.log_history
    walls = [b[0] - a[0] for a, b in zip(ends, ends[1:])]
    cpus = [b[1] - a[1] for a, b in zip(ends, ends[1:])]

    def metric(key: str) -> list[float]:
        return [entry[key] for entry in history if key in entry][1:]  # step 1 is warm-up

    return {"wall_s": walls, "cpu_s": cpus, "fwd_bwd_s": metric("perf/fwd_bwd_s"), "optimizer_s": metric("perf/optimizer_s"),
            "sync_s": metric("perf/weight_sync_s"), "trained": metric("batch/trained_tokens_per_step"),
            "forwarded": metric("batch/forwarded_tokens_per_step"), "total_s": total}


def plain_torch_steps(model_dir: str, budget: int, lora: bool, steps: int) -> tuple[list[float], list[float]]:
    """The same tokens through a plain HF forward with labels + backward + AdamW; seconds per step after step 1."""
    from transformers import AutoModelForCausalLM

    from trainer.config import SweTrainArguments, peft_config_from

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if lora:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config_from(SweTrainArguments(use_peft=True)))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    rng = np.random.default_rng(0)
    length = budget // GROUP
    ids = torch.from_numpy(rng.integers(0, 151_000, size=(GROUP, length), dtype=np.int64))
    labels = ids.clone()
    labels[:, : length // 2] = -100  # the prompt half is not trained, as in the TRL samples
    walls, cpus = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return walls[1:], cpus[1:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one measured step per config, 512-token budget only (under 3 minutes on 2 cores)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--modes", nargs="+", choices=["full", "lora"], default=["full", "lora"])
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per config, the first is warm-up")
    args = parser.parse_args(argv)
    if args.quick and args.budgets == [512, 2048]:
        args.budgets = [512]  # a 2048-token step takes minutes on a loaded 2-core box; the full run measures it
    steps = args.steps or (2 if args.quick else 4)
    if steps < 2:
        parser.error("--steps must be >= 2 (step 1 is warm-up)")

    started = time.perf_counter()
    before_line = machine_line()
    from local_engine.embedded import ensure_tiny_model
    from trainer.cpu_compat import apply_cpu_compat

    apply_cpu_compat("torch")
    model_dir = str(ensure_tiny_model())
    rows = []
    for budget in args.budgets:
        for mode in args.modes:
            lora = mode == "lora"
            trl = trl_steps(model_dir, budget, lora, steps)
            plain_wall, plain_cpu = plain_torch_steps(model_dir, budget, lora, steps)
            wall, cpu = statistics.median(trl["wall_s"]), statistics.median(trl["cpu_s"])
            trained = statistics.median(trl["trained"])
            forwarded = statistics.median(trl["forwarded"])
            base, base_cpu = statistics.median(plain_wall), statistics.median(plain_cpu)
            rows.append([budget, mode, forwarded, trained, wall, cpu, statistics.median(trl["fwd_bwd_s"]),
                         statistics.median(trl["optimizer_s"]),
                         statistics.median(trl["sync_s"]) if trl["sync_s"] else float("nan"), trained / wall,
                         forwarded / wall, base, base_cpu, f"{wall / base:.2f}x", f"{cpu / base_cpu:.2f}x"])
            print(f"... budget {budget} {mode}: {wall:.2f} s/step (plain torch {base:.2f} s)", file=sys.stderr,
                  flush=True)
    print(before_line + "  (before)")
    print(machine_line() + f"  (after); torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"\nOptimizer steps on the embedded tiny Qwen3 (hidden 64, 2 layers, vocab 151,936), float32, "
          f"median of {steps - 1} steps after a warm-up step")
    print(table(["token budget", "mode", "forwarded tok/step", "trained tok/step", "s/step (TRL)", "CPU s/step",
                 "fwd+bwd s", "optimizer s", "weight sync s", "trained tok/s", "forwarded tok/s", "plain s/step",
                 "plain CPU s", "TRL/plain wall", "TRL/plain CPU"], rows))
    print("(s/step: wall time between optimizer steps, weight sync to a no-op transfer included; CPU s: core-seconds "
          "of this process, all threads — steadier than wall time on a shared box; plain: HF forward with labels + "
          "backward + AdamW on the same 4 x budget/4 tokens)")
    print("targets: none (tracks the CPU demo's cost)")
    print(f"(wall time {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
