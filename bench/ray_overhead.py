"""What Ray adds per trajectory under `--cluster` (issue #28): a rollout node's `run` returning a finished
`RolloutOutcome` through Ray, against the same call in-process, for trajectories of several sizes.

A real Ray instance on this machine (one node, as `--cluster ray` starts); an async actor whose `run` returns a
prebuilt outcome of N context tokens (one training row: ids, mask, log-probs, turn versions, as the executor returns
it) — so what is timed is the call, Ray's serialization of the trajectory, the object transfer and the coordinator's
await, not an agent. The in-process baseline awaits the same coroutine on a local object.

    python bench/ray_overhead.py [--quick] [--tokens 2000 32000 128000]
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import exit_on_sigterm, machine_line, percentile, table  # noqa: E402


def make_outcome(tokens: int):
    import numpy as np

    from rollout_worker.nodes.executor import RolloutOutcome
    from rollout_worker.outcomes import EpisodeStatus
    from rollout_worker.serving.assembly import TrainingRow
    from rollout_worker.types import EpisodeResult

    rng = np.random.default_rng(0)
    # The messages as the agent sent them (~4 characters a token), as the row carries them for TRL's sample.
    text = "x" * (4 * tokens // 16)
    messages = [{"role": "user" if i % 2 else "assistant", "content": text} for i in range(16)]
    row = TrainingRow(input_ids=rng.integers(0, 150_000, tokens).tolist(),
                      completion_mask=[int(i % 3 == 0) for i in range(tokens)],
                      old_log_probs=rng.normal(-1.0, 0.5, tokens).tolist(), prompt_messages=messages[:-1],
                      completion_messages=messages[-1:], model_versions=[0] * 8, turn_tokens=[tokens // 24] * 8)
    return RolloutOutcome(result=EpisodeResult(status=EpisodeStatus.COMPLETED, reward=1.0, scorable=True),
                          rows=[row], stats={"turns": 8.0, "sampled_tokens": float(tokens // 3)},
                          first_model_version=0, started_at=time.time(), finished_at=time.time(), node="bench")


class OutcomeNode:
    """Stands for a rollout node whose rollout is already done: `run` returns the prebuilt outcome."""

    def __init__(self, outcomes: dict):
        self.outcomes = outcomes

    async def run(self, rollout_id: str, tokens: int):
        return self.outcomes[tokens]


async def measure(node, calls: int, tokens: int, remote: bool) -> list[float]:
    times = []
    for i in range(calls):
        started = time.perf_counter()
        if remote:
            await asyncio.wrap_future(node.run.remote(f"r{i}", tokens).future())
        else:
            await node.run(f"r{i}", tokens)
        times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tokens", type=int, nargs="+", default=[2000, 32000, 128000])
    parser.add_argument("--calls", type=int, default=None)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    calls = args.calls or (20 if args.quick else 100)
    import logging

    import ray

    before_line = machine_line()
    outcomes = {n: make_outcome(n) for n in args.tokens}
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        actor = ray.remote(OutcomeNode).options(num_cpus=0).remote(outcomes)
        local = OutcomeNode(outcomes)
        rows = []
        for n in args.tokens:
            asyncio.run(measure(actor, 3, n, True))  # warm: the actor's first calls pay its start
            remote_s = asyncio.run(measure(actor, calls, n, True))
            local_s = asyncio.run(measure(local, calls, n, False))
            size = len(pickle.dumps(outcomes[n], protocol=5))
            rows.append([n, size / 1e6, 1e3 * percentile(local_s, 50), 1e3 * percentile(remote_s, 50),
                         1e3 * percentile(remote_s, 99), 1e3 * (percentile(remote_s, 50) - percentile(local_s, 50))])
    finally:
        ray.shutdown()
    print(before_line)
    print(f"\nRay's cost per trajectory ({calls} calls each; one node on this machine)")
    print(table(["context tokens", "pickled MB", "in-process p50 ms", "through Ray p50 ms", "through Ray p99 ms",
                 "added p50 ms"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
