"""Check OUR `rollout_worker.serving.engine_client.EngineClient` against a real vLLM server (run on the GPU box).

What it proves, each as a named check in the JSON report (non-zero exit if any fails):
- `/v1/models` gives `max_model_len`, and `EngineClient.max_model_len()` reads it;
- `/v1/completions` with token-id prompts parses into `Completion` (ids, aligned finite logprobs, finish_reason,
  prompt_tokens), also under concurrency, and vLLM echoes the exact prompt ids;
- an overlong prompt becomes `PromptTooLongError` (vLLM's exact 400 body is recorded, with the numbers we extract);
- vLLM's processed logprobs equal a transformers forward of prompt+completion at the same temperature (max abs diff);
- the control endpoints TRL calls answer (`/get_world_size`, `/server_info`, `/pause?mode=keep`, `/resume`).

Usage: python gpu/check_vllm_engine.py --url http://127.0.0.1:8000 --model policy --model-dir DIR --out report.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time

DEFAULT_TEMPERATURES = (1.0, 0.7)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="vLLM base URL.")
    parser.add_argument("--model", default="policy", help="Served model name.")
    parser.add_argument("--model-dir", required=True, help="Directory of the served model (for the reference).")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="Reference dtype.")
    parser.add_argument("--max-tokens", type=int, default=48, help="Tokens sampled per probe.")
    parser.add_argument("--temperatures", type=float, nargs="+", default=list(DEFAULT_TEMPERATURES))
    parser.add_argument("--tolerance", type=float, default=None,
                        help="Max abs logprob diff that passes (default 1e-3 fp32, 5e-2 bf16).")
    parser.add_argument("--device", default="cuda", help="Where the reference forward runs (cpu: smoke runs).")
    parser.add_argument("--out", default="check_vllm_engine.json", help="Where the JSON report goes.")
    return parser


def probe_prompts(tokenizer, n_random: int = 2, seed: int = 0) -> list[list[int]]:
    """A rendered chat (what the worker sends) and random-id prompts of a few lengths."""
    from rollout_worker.serving.chat_template import resolve_training_template

    template = resolve_training_template(tokenizer)
    chat = [{"role": "system", "content": "You are a coding agent."},
            {"role": "user", "content": "Fix the failing test in repo/ and explain the change."}]
    rendered = tokenizer.apply_chat_template(chat, chat_template=template, add_generation_prompt=True, tokenize=True,
                                             return_dict=False)
    if isinstance(rendered, dict):  # transformers 5 may return a BatchEncoding
        rendered = rendered["input_ids"]
    rng = random.Random(seed)
    prompts = [list(rendered)]
    for length in (7, 300)[:n_random]:
        prompts.append([rng.randrange(len(tokenizer)) for _ in range(length)])
    return prompts


def reference_logprobs(model, prompt: list[int], completion: list[int], temperature: float) -> list[float]:
    """Teacher-forced logprobs of `completion` after `prompt` at `temperature` (vLLM's processed_logprobs)."""
    import torch

    ids = torch.tensor([prompt + completion], device=model.device)
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float() / temperature
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(1, ids[0, len(prompt):, None])[:, 0].tolist()


async def raw_call(session, method: str, url: str, payload: dict | None = None) -> dict:
    async with session.request(method, url, json=payload) as response:
        text = await response.text()
    try:
        body = json.loads(text)
    except ValueError:
        body = text[:500]
    return {"status": response.status, "body": body}


async def run_checks(args, report: dict) -> None:
    import aiohttp
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rollout_worker.serving.engine_client import EngineClient
    from rollout_worker.protocols import PromptTooLongError

    checks = report["checks"]
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    async with EngineClient(args.url, args.model, timeout_s=120, max_retries=1) as client, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        base = client.base_url
        models = await raw_call(http, "GET", f"{base}/v1/models")
        report["raw"]["v1_models"] = models
        max_len = await client.max_model_len()
        checks["max_model_len"] = {"ok": max_len > 0, "value": max_len}

        for path in ("/get_world_size", "/server_info?config_format=json"):
            answer = await raw_call(http, "GET", f"{base}{path}")
            report["raw"][path] = {"status": answer["status"], "body": str(answer["body"])[:400]}
            checks[f"GET {path}"] = {"ok": answer["status"] == 200}
        for path in ("/pause?mode=keep", "/resume"):
            answer = await raw_call(http, "POST", f"{base}{path}")
            report["raw"][path] = answer
            checks[f"POST {path}"] = {"ok": answer["status"] == 200}

        prompts = probe_prompts(tokenizer)
        one = await raw_call(http, "POST", f"{base}/v1/completions", {
            "model": args.model, "prompt": prompts[0], "max_tokens": 4, "temperature": 1.0, "logprobs": 0,
            "return_token_ids": True})
        choice = (one["body"].get("choices") or [{}])[0] if isinstance(one["body"], dict) else {}
        report["raw"]["completion_choice_keys"] = sorted(choice)
        report["raw"]["completion_logprobs_keys"] = sorted(choice.get("logprobs") or {})
        checks["prompt_token_ids echoed"] = {"ok": choice.get("prompt_token_ids") == prompts[0]}

        # Concurrency: all probes at all temperatures at once, through our client.
        jobs = [(p, t) for p in prompts for t in args.temperatures]
        started = time.perf_counter()
        completions = await asyncio.gather(*(
            client.complete(p, max_tokens=args.max_tokens, temperature=t, seed=i) for i, (p, t) in enumerate(jobs)))
        report["concurrent_wall_s"] = round(time.perf_counter() - started, 3)
        shapes_ok = all(len(c.token_ids) == len(c.logprobs) > 0 and c.finish_reason in ("stop", "length")
                        and c.prompt_tokens == len(p) for c, (p, _) in zip(completions, jobs))
        checks["completion parsing (concurrent)"] = {
            "ok": shapes_ok, "n": len(jobs),
            "finish_reasons": sorted({c.finish_reason for c in completions}),
            "completion_lengths": [len(c.token_ids) for c in completions]}

        dtype = torch.float32 if args.dtype == "float32" else torch.bfloat16
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=dtype).to(args.device).eval()
        diffs = []
        for completion, (prompt, temperature) in zip(completions, jobs):
            ref = reference_logprobs(model, prompt, completion.token_ids, temperature)
            diffs.append({"prompt_len": len(prompt), "temperature": temperature, "n": len(ref),
                          "max_abs_diff": max(abs(a - b) for a, b in zip(ref, completion.logprobs))})
        worst = max(d["max_abs_diff"] for d in diffs)
        tolerance = args.tolerance if args.tolerance is not None else (1e-3 if args.dtype == "float32" else 5e-2)
        checks["processed logprobs == transformers forward"] = {
            "ok": worst <= tolerance, "max_abs_diff": worst, "tolerance": tolerance, "dtype": args.dtype,
            "per_probe": diffs}

        # Overlong: a prompt longer than max_model_len must become PromptTooLongError, with vLLM's exact wording.
        overlong = [prompts[0][i % len(prompts[0])] for i in range(max_len + 10)]
        payload = {"model": args.model, "prompt": overlong, "max_tokens": 8, "temperature": 1.0, "logprobs": 0,
                   "return_token_ids": True}
        report["raw"]["overlong_400"] = await raw_call(http, "POST", f"{base}/v1/completions", payload)
        try:
            await client.complete(overlong, max_tokens=8)
            checks["overlong -> PromptTooLongError"] = {"ok": False, "error": "no error raised"}
        except PromptTooLongError as error:
            checks["overlong -> PromptTooLongError"] = {
                "ok": error.status == 400 and error.max_model_len == max_len and error.prompt_tokens == len(overlong),
                "message": str(error), "max_model_len": error.max_model_len, "prompt_tokens": error.prompt_tokens}
        except Exception as error:  # noqa: BLE001 - report the wrong kind of error as a failed check
            checks["overlong -> PromptTooLongError"] = {"ok": False, "error": f"{type(error).__name__}: {error}"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report: dict = {"url": args.url, "model": args.model, "checks": {}, "raw": {}}
    try:
        asyncio.run(run_checks(args, report))
    except Exception as error:  # noqa: BLE001 - the report must still be written
        report["crash"] = f"{type(error).__name__}: {error}"
    ok = "crash" not in report and all(c["ok"] for c in report["checks"].values())
    report["ok"] = ok
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1, default=str)
    for name, check in report["checks"].items():
        print(f"{'PASS' if check['ok'] else 'FAIL'} {name}: "
              f"{ {k: v for k, v in check.items() if k not in ('ok', 'per_probe')} }")
    if "crash" in report:
        print("CRASH", report["crash"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
