"""The serving path under test, alone in its process: the interception gate + one `TurnServer` loop per rollout
(real `PromptAssembler` with the Qwen3 tokenizer and TRL's training template, real `parse_completion`, the real
`EngineClient` to the engine stand-in) — exactly what `RolloutWorker` runs per rollout, minus sandboxes and agents.

Commands: "open" n → n endpoints; "snapshot" → CPU, RSS, turns served; "close_all" → per-turn overheads and drift
counters of the rollouts it closes; "memory" → RSS and the bytes held in token and message buffers.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import tracemalloc
from typing import Any

from bench.processes import process_snapshot, serve_commands
from control_plane import GateConfig, InterceptionServer, RolloutClosed
from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer
from rollout_worker.config import WorkerConfig
from rollout_worker.serving.assembly import PromptAssembler
from rollout_worker.serving.chat_template import resolve_training_template
from rollout_worker.serving.engine_client import EngineClient
from rollout_worker.serving.turns import TurnServer, TurnState


def _deep_size(obj: Any, seen: set[int]) -> int:
    """Bytes of `obj` and everything it references (lists, dicts, strings, numbers), each object once."""
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        size += sum(_deep_size(item, seen) for item in obj)
    return size


def conversation_buffer_bytes(conversation) -> dict[str, int]:
    """What a conversation holds that grows with its context: token buffers (ids, mask, logprobs) and held messages.

    Reads the rows' private fields: a benchmark may look inside to subtract exactly what `concurrency` excludes.
    Small ints are shared by the interpreter, so each object is counted once.
    """
    seen: set[int] = set()
    tokens = messages = 0
    for row in conversation._rows:
        tokens += sum(_deep_size(buffer, seen) for buffer in (row.ids, row.mask, row.logprobs))
        messages += _deep_size(row.messages, seen) + _deep_size(row.raw, seen) + _deep_size(row.tools, seen)
    return {"token_bytes": tokens, "message_bytes": messages}


class GcPauses:
    """Records how long each garbage collection stops the event loop (gc.callbacks), per generation."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def take(self) -> dict:
        pauses, self.pauses = self.pauses, []
        by_generation = {}
        for generation, seconds in pauses:
            count, total, longest = by_generation.get(generation, (0, 0.0, 0.0))
            by_generation[generation] = (count + 1, total + seconds, max(longest, seconds))
        return by_generation


class GateUnderTest:
    def __init__(self, engine_url: str, options: dict):
        self.engine_url = engine_url
        self.options = options
        self.tokenizer = load_qwen3_tokenizer()
        self.assembler = PromptAssembler(self.tokenizer, resolve_training_template(self.tokenizer))
        self.rollouts: list[tuple[Any, Any, TurnState, asyncio.Task]] = []
        self.closed_turns = 0
        self._next_id = 0
        self.gc_pauses = GcPauses()

    async def run(self, conn) -> None:
        # The per-rollout rate limit is a policy for hostile sandboxes, not serving cost: the stand-in agents here
        # replay turns back to back, far faster than any real agent, so it is lifted for the measurement.
        config = GateConfig(max_pending_per_rollout=8, rollout_requests_per_s=1e9, rollout_request_burst=10**9)
        self.server = InterceptionServer(host="127.0.0.1", port=0, config=config, served_model_name="policy")
        await self.server.start()
        try:
            async with EngineClient(self.engine_url, "policy", timeout_s=120) as engine:
                max_model_len = await engine.max_model_len()
                worker_config = WorkerConfig(max_turns=10**9, max_tokens_per_turn=1024)
                self.turns = TurnServer(config=worker_config, engine=engine, tokenizer=self.tokenizer,
                                        max_model_len=max_model_len, model_version=lambda: 0)
                conn.send(("ready", {"url": self.server.url}))
                await serve_commands(conn, {"open": self.open, "snapshot": self.snapshot, "close_all": self.close_all,
                                            "memory": self.memory, "trace": self.trace,
                                            "gc_pauses": self._gc_pauses})
                await self.close_all()
        finally:
            await self.server.stop()

    async def open(self, n: int, responder: str = "turns") -> list[tuple[str, str]]:
        """Open n rollouts answered by the worker's `TurnServer` ("turns") or by a canned reply ("canned": the gate's
        HTTP path alone, no assembly, engine call or parsing)."""
        endpoints = []
        for _ in range(n):
            handle = await self.server.open_rollout(f"bench-{self._next_id}")
            self._next_id += 1
            conversation = self.assembler.new_conversation()
            state = TurnState()
            if responder == "canned":
                serving = self._canned(handle, state)
            else:
                serving = self.turns.serve(handle, conversation, state, asyncio.Event())
            task = asyncio.create_task(serving)
            self.rollouts.append((handle, conversation, state, task))
            endpoints.append((handle.base_url, handle.api_key))
        return endpoints

    async def _canned(self, handle, state: TurnState) -> None:
        message = self.options["canned_message"]
        while True:
            try:
                request = await handle.next_request(timeout=600)
            except asyncio.TimeoutError:
                continue
            except RolloutClosed:
                return
            await request.reply(message, finish_reason="tool_calls", usage={"prompt_tokens": 1, "completion_tokens": 1})
            state.turns += 1

    def _turns(self) -> int:
        return self.closed_turns + sum(state.turns for _, _, state, _ in self.rollouts)

    async def snapshot(self) -> dict:
        return {**process_snapshot(), "turns_total": self._turns(), "open_rollouts": self.server.open_rollouts,
                "pending": self.server.pending_requests}

    async def _gc_pauses(self) -> dict:
        """Collector pauses since the last call (or close_all): {generation: (count, total s, longest s)}."""
        return self.gc_pauses.take()

    async def trace(self, on: bool) -> bool:
        """Start / stop tracemalloc: while on, "memory" also reports the Python heap allocated since the start."""
        if on:
            tracemalloc.start()
        else:
            tracemalloc.stop()
        return tracemalloc.is_tracing()

    async def memory(self) -> dict:
        gc.collect()  # count what is alive, not garbage awaiting collection
        totals = {"token_bytes": 0, "message_bytes": 0,
                  "traced_bytes": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None}
        for _, conversation, _, _ in self.rollouts:
            for key, value in conversation_buffer_bytes(conversation).items():
                totals[key] += value
        return {**process_snapshot(), **totals, "open_rollouts": self.server.open_rollouts,
                "turns_total": self._turns()}

    async def close_all(self) -> dict:
        rollouts, self.rollouts = self.rollouts, []
        overhead, forks, parse_failures, ended = [], 0, 0, {}
        for handle, conversation, state, task in rollouts:
            await handle.close()
        for handle, conversation, state, task in rollouts:
            try:
                await asyncio.wait_for(task, timeout=10)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                task.cancel()
            overhead.extend(state.overhead_s)
            forks += conversation.stats["forks"]
            parse_failures += state.parse_failures
            if state.ended_by:
                ended[state.ended_by] = ended.get(state.ended_by, 0) + 1
            self.closed_turns += state.turns
        return {"overhead_s": overhead, "forks": forks, "parse_failures": parse_failures, "ended_by": ended,
                "closed": len(rollouts), "gc": self.gc_pauses.take()}


def run_gate_process(conn, engine_url: str, options: dict | None = None) -> None:
    """`Child` target. `options["uvloop"]`: run the gate on uvloop instead of asyncio's default loop."""
    options = options or {}
    gate = GateUnderTest(engine_url, options)
    if options.get("uvloop"):
        import uvloop

        uvloop.run(gate.run(conn))
    else:
        asyncio.run(gate.run(conn))
