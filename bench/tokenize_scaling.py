"""Per-turn prompt assembly cost against context length: our incremental assembly vs a full re-render.

A realistic agent conversation (pi-style tools, think blocks, compact tool-call JSON as a model samples it, ~700-token
tool results, our replies echoed back re-serialized) is grown to 8k, 48k and 160k held tokens with the real Qwen3
tokenizer and TRL's qwen3_training template. At each size we time:

- incremental: `Conversation.prepare` + `commit` for one more turn (held ids + bridge; what the worker does), and
  the part of it spent rendering + tokenizing the new messages (the bridge), which depends on the size of the new
  tool result, not on the context; the rest (matching the history, copying the held ids) is what grows with it,
- full render: render the whole conversation with the training template and tokenize it (what re-rendering costs),
- parse: `parse_completion` of the sampled turn (also per turn, shown for completeness).

Times are CPU time of this process (`time.process_time`, medians): the machine is shared, and wall-clock medians
mostly measure the other tenants. Every request is a fresh JSON round trip of the message list, as the gate would
decode it, so no comparison is shortcut by object identity. Targets (issue 3): incremental ≤ 2 ms/turn at 160k,
≥ 100× faster than a full render.

    python bench/tokenize_scaling.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer
from rollout_worker.serving.assembly import PromptAssembler
from rollout_worker.serving.chat_template import resolve_training_template
from rollout_worker.serving.messages import normalize_messages
from rollout_worker.serving.parsing import parse_completion

try:
    from bench.report import machine_line
except ImportError:  # run as a script: bench/ is on sys.path, not the repo root
    from report import machine_line

SIZES = (8_000, 48_000, 160_000)
TARGET_MS_AT_160K = 2.0
TARGET_RATIO = 100.0


def _tool(name: str, description: str, **properties: str) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {k: {"type": t, "description": f"The {k}."} for k, t in properties.items()},
                "required": list(properties),
            },
        },
    }


TOOLS = [
    _tool("read", "Read the contents of a file. Supports offset/limit for large files.",
          path="string", offset="integer"),
    _tool("bash", "Execute a bash command in the current working directory. Returns stdout and stderr.",
          command="string"),
    _tool("edit", "Edit a file by replacing exact text. The old text must match exactly.", path="string",
          oldText="string", newText="string"),
    _tool("write", "Write content to a file. Creates the file if it does not exist.", path="string", content="string"),
]


class SyntheticAgent:
    """Deterministic, code-like turns: what the model samples and what the tools return."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        self.words = ["self", "value", "result", "config", "items", "index", "parser", "token", "request", "cache",
                      "handler", "path", "data", "error", "count", "buffer", "stream", "module", "record", "state"]

    def _identifier(self) -> str:
        return "_".join(self.rng.sample(self.words, 2))

    def tool_result(self, n_lines: int = 60) -> str:
        lines = []
        for i in range(n_lines):
            indent = "    " * self.rng.randint(0, 3)
            kind = self.rng.random()
            if kind < 0.3:
                lines.append(f"{indent}def {self._identifier()}({self._identifier()}, {self._identifier()}=None):")
            elif kind < 0.6:
                lines.append(f"{indent}{self._identifier()} = {self._identifier()}.get({self.rng.randint(0, 999)!r})")
            elif kind < 0.8:
                lines.append(f"{indent}if {self._identifier()} is not None and len({self._identifier()}) > {i}:")
            else:
                lines.append(f"{indent}return {self._identifier()}[{self.rng.randint(0, 9)}:]  # line {i}")
        return "\n".join(lines)

    def sampled_text(self, turn: int) -> str:
        thought = (f"<think>\nThe {self._identifier()} in module {turn} looks wrong; "
                   f"inspect {self._identifier()}.\n</think>\n\n")
        if self.rng.random() < 0.5:
            call = {"name": "bash", "arguments": {"command": f"grep -n {self._identifier()} src/mod_{turn}.py"}}
        else:
            call = {"name": "read", "arguments": {"path": f"src/mod_{turn}.py", "offset": turn}}
        return thought + "<tool_call>\n" + json.dumps(call, separators=(",", ":")) + "\n</tool_call><|im_end|>"


def echo(reply: dict) -> dict:
    """pi's echo of our reply: null content on tool-call turns, arguments re-serialized, no reasoning."""
    echoed = {"role": "assistant", "content": reply["content"]}
    if reply.get("tool_calls"):
        echoed["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {
                "name": c["function"]["name"], "arguments": json.dumps(json.loads(c["function"]["arguments"]))}}
            for c in reply["tool_calls"]
        ]
    return echoed


clock = time.process_time


class TimedAssembler(PromptAssembler):
    """The real assembler, also accumulating the time spent building bridges (render + tokenize new messages)."""

    bridge_seconds = 0.0
    bridge_tokens = 0

    def bridge_ids(self, *args, **kwargs):
        t0 = clock()
        ids = super().bridge_ids(*args, **kwargs)
        self.bridge_seconds += clock() - t0
        self.bridge_tokens += len(ids)
        return ids


class Bench:
    def __init__(self):
        self.tokenizer = load_qwen3_tokenizer()
        self.template = resolve_training_template(self.tokenizer)
        self.assembler = TimedAssembler(self.tokenizer, self.template)
        self.agent = SyntheticAgent()
        self.conversation = self.assembler.new_conversation()
        self.messages = [
            {"role": "system", "content": "You are an expert coding assistant. " * 20},
            {"role": "user", "content": [{"type": "text", "text": "Fix the failing test in src/. " * 10}]},
        ]
        self.held_tokens = 0
        self.turn = 0

    def step(self) -> tuple[float, float, float, int]:
        """One agent turn; returns seconds of (prepare + commit, of which bridge, parse) and the bridge's tokens."""
        request = json.loads(json.dumps(self.messages))  # what the gate decodes: fresh objects every call
        tools = json.loads(json.dumps(TOOLS))
        ids = self.tokenizer.encode(self.agent.sampled_text(self.turn), add_special_tokens=False)
        logprobs = [-0.5] * len(ids)
        bridge_before, tokens_before = self.assembler.bridge_seconds, self.assembler.bridge_tokens
        t0 = clock()
        plan = self.conversation.prepare(request, tools)
        t1 = clock()
        reply = parse_completion(self.tokenizer, ids, plan.prompt_ids, tools).message
        t2 = clock()
        self.conversation.commit(plan, ids, logprobs, reply, "stop", 0)
        t3 = clock()
        if plan.forked:
            raise RuntimeError(f"benchmark conversation forked: {plan.detail}")
        self.held_tokens = len(plan.prompt_ids) + len(ids)
        self.messages = self.messages + [echo(reply), {"role": "tool", "tool_call_id": reply["tool_calls"][0]["id"],
                                                       "content": self.agent.tool_result()}]
        self.turn += 1
        bridge = self.assembler.bridge_seconds - bridge_before
        return (t1 - t0) + (t3 - t2), bridge, t2 - t1, self.assembler.bridge_tokens - tokens_before

    def grow_to(self, tokens: int) -> None:
        while self.held_tokens < tokens:
            self.step()

    def full_render_seconds(self) -> float:
        request = json.loads(json.dumps(self.messages))
        t0 = clock()
        normalized = normalize_messages(request)
        text = self.tokenizer.apply_chat_template(normalized, tools=TOOLS, add_generation_prompt=True, tokenize=False,
                                                  chat_template=self.template)
        self.tokenizer.encode(text, add_special_tokens=False)
        return clock() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (under 3 minutes on 2 cores)")
    args = parser.parse_args(argv)
    turns, renders = (10, 2) if args.quick else (40, 5)

    started = time.perf_counter()
    bench = Bench()
    results = []
    for size in SIZES:
        bench.grow_to(size)
        held = bench.held_tokens
        timings = [bench.step() for _ in range(turns)]  # grows the context by ~1% at 160k: same size class
        incremental = statistics.median(t[0] for t in timings) * 1e3
        bridge = statistics.median(t[1] for t in timings) * 1e3
        parse = statistics.median(t[2] for t in timings) * 1e3
        new_tokens = statistics.median(t[3] for t in timings)
        full = statistics.median(bench.full_render_seconds() for _ in range(renders)) * 1e3
        results.append((held, new_tokens, incremental, bridge, full, parse))
        print(f"... {held} tokens measured ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    stats = bench.conversation.stats
    print(machine_line())
    print(f"\nPer-turn prompt cost (CPU ms, medians), Qwen3 tokenizer + qwen3_training template; "
          f"{stats['turns']} turns, {stats['forks']} forks, {stats['sampled_tokens']} sampled = {stats['trained_tokens']} trained tokens")
    header = (f"{'held tokens':>11} | {'new tok/turn':>12} | {'incremental':>11} | {'bridge part':>11} | "
              f"{'rest':>6} | {'full render':>11} | {'ratio':>6} | {'parse':>6}")
    print(header)
    print("-" * len(header))
    for held, new_tokens, incremental, bridge, full, parse in results:
        print(f"{held:>11,} | {new_tokens:>12.0f} | {incremental:>11.3f} | {bridge:>11.3f} | "
              f"{incremental - bridge:>6.3f} | {full:>11.1f} | {full / incremental:>5.0f}x | {parse:>6.3f}")
    print("(bridge part: render + tokenize the new messages, grows with the tool result, not the context; "
          "rest: history match, held-id copy, commit)")
    held, _, incremental, _, full, _ = results[-1]
    meets_ms, meets_ratio = incremental <= TARGET_MS_AT_160K, full / incremental >= TARGET_RATIO
    print(f"\ntarget: incremental <= {TARGET_MS_AT_160K} ms/turn at 160k: {incremental:.3f} ms "
          f"-> {'met' if meets_ms else 'NOT met'}")
    print(f"target: >= {TARGET_RATIO:.0f}x faster than a full render at 160k: {full / incremental:.0f}x "
          f"-> {'met' if meets_ratio else 'NOT met'}")
    print(f"(wall time {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
