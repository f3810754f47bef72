"""Did the weights arrive? Log-probabilities of a fixed probe, from vLLM or from a checkpoint, and their comparison.

The probe is deterministic (`--seed`): `--sequences` sequences of `--length` token ids, each a chat-rendered short
prompt followed by random ids. Three subcommands:

* `vllm`: vLLM's prompt logprobs of every probe token (`/v1/completions`, token-id prompt, `prompt_logprobs: 0`,
  temperature 1), i.e. what the engine's CURRENT weights say;
* `hf`: the same from a transformers forward of a model directory (the trainer's checkpoint) on this GPU;
* `compare A.json B.json [...]`: max / mean abs difference of every pair, written as one JSON report.

Proof of a weight sync (docs/gpu.md): vLLM after the sync ≈ the trainer's saved weights (bf16 noise) while vLLM before
the sync differs from both.

Usage: python gpu/probe_weights.py vllm --url http://127.0.0.1:8000 --out before.json
       python gpu/probe_weights.py hf --model-dir /tmp/run --out trainer.json
       python gpu/probe_weights.py compare before.json after.json trainer.json --out sync_proof.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("vllm", "hf"):
        p = sub.add_parser(name)
        p.add_argument("--sequences", type=int, default=4, help="Probe sequences.")
        p.add_argument("--length", type=int, default=256, help="Tokens per probe sequence.")
        p.add_argument("--seed", type=int, default=0, help="Probe seed.")
        p.add_argument("--out", required=True, help="Where the logprobs go (JSON).")
        if name == "vllm":
            p.add_argument("--url", default="http://127.0.0.1:8000", help="vLLM base URL.")
            p.add_argument("--model", default="policy", help="Served model name.")
        else:
            p.add_argument("--model-dir", required=True, help="Model directory (a checkpoint).")
            p.add_argument("--adapter-dir", default=None,
                           help="A PEFT adapter (a LoRA run's output) to merge into --model-dir before the forward.")
            p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"), help="Forward dtype.")
            p.add_argument("--device", default="cuda", help="cuda, or cpu for smoke runs.")
    p = sub.add_parser("compare")
    p.add_argument("files", nargs="+", help="Two or more probe JSON files.")
    p.add_argument("--out", required=True, help="Where the comparison goes (JSON).")
    return parser


def probe_ids(sequences: int, length: int, seed: int) -> list[list[int]]:
    """Deterministic token ids: a short chat turn (Qwen3 special tokens) then random ordinary ids."""
    import random

    rng = random.Random(seed)
    head = [151644, 872, 198]  # <|im_start|>user\n
    return [head + [rng.randrange(1000, 150000) for _ in range(length - len(head))] for _ in range(sequences)]


def vllm_logprobs(url: str, model: str, ids: list[int]) -> list[float]:
    """Prompt logprob of every token after the first, from vLLM's `prompt_logprobs`."""
    import requests

    body = {"model": model, "prompt": ids, "max_tokens": 1, "temperature": 1.0, "prompt_logprobs": 0}
    response = requests.post(f"{url.rstrip('/')}/v1/completions", json=body, timeout=120)
    response.raise_for_status()
    entries = response.json()["choices"][0]["prompt_logprobs"]
    out = []
    for token, entry in zip(ids[1:], entries[1:], strict=True):
        # vLLM: {"<token id>": {"logprob": x, "rank": r, "decoded_token": s}, ...} holding at least the prompt token.
        value = entry.get(str(token), entry.get(token))
        out.append(float(value["logprob"] if isinstance(value, dict) else value))
    return out


def hf_logprobs(model, ids: list[int], device: str) -> list[float]:
    import torch

    tensor = torch.tensor([ids], device=device)
    with torch.no_grad():
        logits = model(tensor).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(1, tensor[0, 1:, None])[:, 0].tolist()


def compare(paths: list[str]) -> dict:
    loaded = {path: json.load(open(path)) for path in paths}
    pairs = {}
    for a, b in itertools.combinations(paths, 2):
        diffs = [abs(x - y) for sa, sb in zip(loaded[a]["logprobs"], loaded[b]["logprobs"], strict=True)
                 for x, y in zip(sa, sb, strict=True)]
        pairs[f"{loaded[a]['label']} vs {loaded[b]['label']}"] = {
            "max_abs_diff": max(diffs), "mean_abs_diff": sum(diffs) / len(diffs), "tokens": len(diffs)}
    return {"files": paths, "pairs": pairs}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "compare":
        report = compare(args.files)
        print(json.dumps(report["pairs"], indent=1))
    else:
        sequences = probe_ids(args.sequences, args.length, args.seed)
        if args.command == "vllm":
            logprobs = [vllm_logprobs(args.url, args.model, ids) for ids in sequences]
            label = f"vllm@{args.out.rsplit('/', 1)[-1].removesuffix('.json')}"
        else:
            import torch
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=getattr(torch, args.dtype))
            if args.adapter_dir:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, args.adapter_dir).merge_and_unload()
            model = model.to(args.device).eval()
            logprobs = [hf_logprobs(model, ids, args.device) for ids in sequences]
            label = f"hf@{args.out.rsplit('/', 1)[-1].removesuffix('.json')}"
        report = {"label": label, "logprobs": logprobs,
                  "mean_logprob": sum(map(sum, logprobs)) / sum(map(len, logprobs))}
        print(f"{label}: {sum(map(len, logprobs))} tokens, mean logprob {report['mean_logprob']:.4f}")
    with open(args.out, "w") as handle:
        json.dump(report, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
