"""How well a policy acts as mini-swe-agent's model, read from `intercept-rl rollouts` records.

`tool_call_rate` is measured on the sampled tokens themselves, not on what the agent did with them: each sampled
turn (a run of `completion_mask` = 1) is decoded and counts when it holds exactly one well-formed Qwen3 tool call
`<tool_call>{"name": "bash", "arguments": {"command": "..."}}</tool_call>`, the only tool mini-swe-agent offers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)


def sampled_turns(row: dict) -> list[list[int]]:
    """The sampled ids of each turn of a row: its runs of completion_mask = 1."""
    turns, current = [], []
    for token, trained in zip(row["input_ids"], row["completion_mask"]):
        if trained:
            current.append(token)
        elif current:
            turns.append(current)
            current = []
    if current:
        turns.append(current)
    return turns


def bash_command(text: str) -> str | None:
    """The command of the one well-formed bash tool call in `text`, else None."""
    calls = _CALL.findall(text)
    if len(calls) != 1:
        return None
    try:
        call = json.loads(calls[0])
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or call.get("name") != "bash" or not isinstance(call.get("arguments"), dict):
        return None
    command = call["arguments"].get("command")
    return command if isinstance(command, str) and command.strip() else None


def summarize(records: list[dict], tokenizer) -> dict:
    """Per-run numbers: rollouts, solve rate, mean reward, mean turns, tool-call rate, parse failures, forks, and the
    fraction of sampled tokens trained (scorable rollouts only for reward and solve rate)."""
    scorable = [r for r in records if r.get("scorable")]
    turns = [t for r in records for row in r["rows"] for t in sampled_turns(row)]
    calls = sum(bash_command(tokenizer.decode(t, skip_special_tokens=False)) is not None for t in turns)
    sampled = sum(r["drift"]["sampled_tokens"] for r in records)
    trained = sum(r["drift"]["trained_tokens"] for r in records)
    n = max(1, len(records))
    return {
        "rollouts": len(records),
        "scorable": len(scorable),
        "solve_rate": round(sum(bool(r["resolved"]) for r in scorable) / max(1, len(scorable)), 4),
        "reward_mean": round(sum(r["reward"] for r in scorable) / max(1, len(scorable)), 4),
        "turns_mean": round(sum(r["turns"] for r in records) / n, 3),
        "sampled_turns": len(turns),
        "tool_call_rate": round(calls / max(1, len(turns)), 4),
        "parse_failures": sum(r["drift"]["parse_failures"] for r in records),
        "forks": sum(r["drift"]["forks"] for r in records),
        "trained_fraction": round(trained / sampled, 4) if sampled else None,
        "statuses": {s: sum(r["status"] == s for r in records) for s in sorted({r["status"] for r in records})},
    }


def read_records(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    """`python -m trainer.warm_start.measure ROLLOUTS.jsonl …`: one JSON summary line per file."""
    import sys

    paths = list(sys.argv[1:] if argv is None else argv)
    missing = [p for p in paths if not Path(p).is_file()]
    if not paths or missing:
        print(f"usage: python -m trainer.warm_start.measure ROLLOUTS.jsonl ...; no such file: {missing}",
              file=sys.stderr)
        return 2
    from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer

    tokenizer = load_qwen3_tokenizer()
    for path in paths:
        print(json.dumps({"file": path, **summarize(read_records(path), tokenizer)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
