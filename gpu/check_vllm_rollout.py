"""One real rollout group through OUR gate + worker (`TurnServer`) against a real vLLM, checked for row fidelity.

The agent is `tests/agents/scripted_agent.py` (the real `openai` SDK: compact tool-call JSON re-serialized, content as
text-part lists, `content: null`, extra keys, then a truncated history). For every trained row, `old_log_probs`
(vLLM's processed logprobs) must equal a teacher-forced transformers forward of `input_ids` on the GPU at the
worker's temperature, every sampled token must be trained, and the truncation must be counted as a fork.

Usage: python gpu/check_vllm_rollout.py --url http://127.0.0.1:8000 --model policy --model-dir DIR --out r.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import queue
import sys
import time
from pathlib import Path

AGENT = Path(__file__).resolve().parent.parent / "tests" / "agents" / "scripted_agent.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="vLLM base URL.")
    parser.add_argument("--model", default="policy", help="Served model name.")
    parser.add_argument("--model-dir", required=True, help="Directory of the served model (for the reference).")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="Reference dtype.")
    parser.add_argument("--temperature", type=float, default=0.9, help="The worker's (trainer's) temperature.")
    parser.add_argument("--groups", type=int, default=1, help="GRPO groups to run (2 rollouts each).")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="Max abs logprob diff that passes (default 1e-3 fp32, 5e-2 bf16).")
    parser.add_argument("--timeout-s", type=float, default=240.0, help="Bound on the whole run.")
    parser.add_argument("--device", default="cuda", help="Where the reference forward runs (cpu: smoke runs).")
    parser.add_argument("--out", default="check_vllm_rollout.json", help="Where the JSON report goes.")
    return parser


class ScriptedAgents:
    """Runs the scripted openai-SDK agent as a subprocess per rollout; alternating rewards give groups variance."""

    def __init__(self, stream: str = "0"):
        self.rewards = itertools.cycle([1.0, 0.0])
        self.stream = stream

    async def run(self, task, endpoint, stop):
        from rollout_worker.outcomes import EpisodeStatus
        from rollout_worker.types import EpisodeResult

        env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
               "OPENAI_BASE_URL": endpoint.base_url, "OPENAI_API_KEY": endpoint.api_key,
               "OPENAI_MODEL": endpoint.model, "SCRIPTED_STREAM": self.stream}
        proc = await asyncio.create_subprocess_exec(sys.executable, str(AGENT), env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        waiter = asyncio.ensure_future(proc.communicate())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({waiter, stopper}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if proc.returncode is None:
                proc.kill()
            out, _ = await waiter
        output = out.decode(errors="replace")[-2000:]
        if proc.returncode != 0:
            return EpisodeResult(status=EpisodeStatus.AGENT_ERROR, reward=None, scorable=False, agent_output=output,
                                 exit_code=proc.returncode)
        return EpisodeResult(status=EpisodeStatus.COMPLETED, reward=next(self.rewards), resolved=False, agent_output=output,
                             exit_code=0)


def drain(q: queue.Queue) -> list:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


def run(args) -> dict:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer
    from intercept_common.rollout_record import RolloutRecord
    from rollout_worker.config import WorkerConfig
    from rollout_worker.serving.chat_template import resolve_training_template
    from rollout_worker.types import Task
    from rollout_worker.worker import RolloutWorker

    tokenizer = load_qwen3_tokenizer()
    tasks = [Task(instance_id=f"gpu{i}", repo="demo/repo", base_commit="0" * 40, problem_statement="fix it")
             for i in range(args.groups)]
    config = WorkerConfig(served_model_name=args.model, num_generations=2, max_inflight=2, max_groups=args.groups,
                          temperature=args.temperature, max_tokens_per_turn=24, seed=0, keep_trajectories=True)
    worker = RolloutWorker(config, tasks=tasks, episode_runner=ScriptedAgents(), tokenizer=tokenizer,
                           chat_template=resolve_training_template(tokenizer), engine_url=args.url)
    started = time.monotonic()
    worker.start()
    try:
        worker.update_model_version(1)
        while not worker.finished.is_set() and time.monotonic() - started < args.timeout_s:
            worker.check_health(stale_after_s=120)
            time.sleep(0.2)
        finished = worker.finished.is_set()
    finally:
        worker.stop()
    wall_s = time.monotonic() - started
    records = [RolloutRecord.from_json(r) for r in drain(worker.trajectories)]
    samples = drain(worker.rollout_buffer)

    dtype = torch.float32 if args.dtype == "float32" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=dtype).to(args.device).eval()
    worst, rows, trained_mismatch = 0.0, 0, []
    for rec in records:
        drift = rec.drift
        if drift is None or drift.trained_tokens != drift.sampled_tokens:
            trained_mismatch.append(drift)
        for row in rec.rows:
            ids = torch.tensor([list(row.input_ids)], device=args.device)
            with torch.no_grad():
                logits = model(ids).logits[0, :-1].float() / args.temperature
            ref = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0].cpu().numpy()
            ref = np.concatenate([[0.0], ref])
            mask = np.array(row.completion_mask, dtype=bool)
            got = np.array(row.old_log_probs, dtype=np.float64)
            worst = max(worst, float(np.abs(got[mask] - ref[mask]).max()))
            rows += 1
    tolerance = args.tolerance if args.tolerance is not None else (1e-3 if args.dtype == "float32" else 5e-2)
    checks = {
        "groups finished": {"ok": finished, "wall_s": round(wall_s, 2)},
        "rollouts completed": {"ok": len(records) == 2 * args.groups
                               and all(r.status == "completed" for r in records),
                               "statuses": [r.status for r in records],
                               "turns": [r.turns for r in records]},
        "truncated history counted as a fork": {"ok": all(r.forks == 1 for r in records),
                                                "forks": [r.forks for r in records]},
        "100% of sampled tokens trained": {"ok": not trained_mismatch and bool(records),
                                           "sampled": [r.drift.sampled_tokens if r.drift else None for r in records]},
        "old_log_probs == teacher-forced forward": {"ok": rows > 0 and worst <= tolerance, "rows": rows,
                                                    "max_abs_diff": worst, "tolerance": tolerance},
        "TRL RolloutSamples produced": {"ok": bool(samples) and all(s.model_version == 1 for s in samples),
                                        "n": len(samples)},
    }
    return {"checks": checks, "records_brief": [
        {k: r.to_json().get(k) for k in ("status", "turns", "reward", "advantage", "ended_by", "drift")}
        for r in records]}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except Exception as error:  # noqa: BLE001 - the report must still be written
        report = {"checks": {}, "crash": f"{type(error).__name__}: {error}"}
    report["ok"] = "crash" not in report and all(c["ok"] for c in report["checks"].values())
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1, default=str)
    for name, check in report["checks"].items():
        print(f"{'PASS' if check['ok'] else 'FAIL'} {name}: { {k: v for k, v in check.items() if k != 'ok'} }")
    if "crash" in report:
        print("CRASH", report["crash"])
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
