"""Agent traffic for benchmarks: many concurrent agents, each a real async `openai` SDK client, in one process.

Each agent plays a SWE episode the way pi / mini-swe-agent do: a system prompt and a task, the tool list on every
call, our assistant reply echoed back as the agent re-serializes it (content null on tool-call turns, no reasoning),
then a tool result (code-like text of 15-45 lines) — so the history grows every turn. After `episode_turns` turns
the agent starts a new episode on the next endpoint of its pool (a fresh rollout, like a real worker would open).

Latencies are recorded as (start time, seconds) on the system-wide monotonic clock, so the orchestrating process can
cut exactly the same measurement window out of every process's numbers.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass

SYSTEM_PROMPT = (
    "You are an expert coding assistant operating inside a repository. You help users by reading files, executing "
    "commands, editing code, and writing new files. Use bash for file operations like ls, grep, find. Use read to "
    "examine files before editing. Use edit for precise changes (old text must match exactly). Be concise. "
) * 3


def _tool(name: str, description: str, **properties: str) -> dict:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "required": list(properties),
                       "properties": {k: {"type": t, "description": f"The {k}."} for k, t in properties.items()}}}}


TOOLS = [
    _tool("read", "Read the contents of a file. Supports offset/limit for large files.", path="string",
          offset="integer"),
    _tool("bash", "Execute a bash command in the current working directory. Returns stdout and stderr.",
          command="string"),
    _tool("edit", "Edit a file by replacing exact text.", path="string", oldText="string", newText="string"),
    _tool("write", "Write content to a file. Creates the file if it does not exist.", path="string",
          content="string"),
]

_WORDS = ["self", "value", "result", "config", "items", "index", "parser", "token", "request", "cache", "handler",
          "path", "data", "error", "count", "buffer", "stream", "module", "record", "state", "header", "field"]


def tool_result(rng: random.Random) -> str:
    """What a `grep`/`read` returns: 15-45 lines of plausible Python."""
    lines = []
    for i in range(rng.randint(15, 45)):
        a, b = rng.sample(_WORDS, 2)
        indent = "    " * rng.randint(0, 3)
        lines.append(rng.choice([
            f"src/{a}.py:{i + 10}:{indent}def {a}_{b}(self, {b}=None):",
            f"src/{a}.py:{i + 10}:{indent}{a} = {b}.get({rng.randint(0, 999)!r})",
            f"src/{b}.py:{i + 10}:{indent}if {a} is not None and len({b}) > {i}:",
            f"src/{b}.py:{i + 10}:{indent}return self.{a}[{rng.randint(0, 9)}:]  # {b}",
        ]))
    return "\n".join(lines)


def first_messages(rng: random.Random) -> list[dict]:
    task = (f"The test tests/test_{rng.choice(_WORDS)}.py::test_{rng.choice(_WORDS)} fails with a KeyError when the "
            f"header is empty. Find the cause in src/ and fix it without changing the tests.")
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": [{"type": "text", "text": task}]}]  # pi sends text parts


def echo(message: dict) -> dict:
    """How an agent sends our reply back: re-serialized, content null on tool-call turns, reasoning dropped."""
    echoed: dict = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        echoed["tool_calls"] = [{"id": c["id"], "type": "function",
                                 "function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}}
                                for c in message["tool_calls"]]
    return echoed


class CallFailed(Exception):
    """A chat call did not return an answer (HTTP error, timeout, connection lost)."""


class OpenAIChat:
    """An agent's connection through the real async `openai` SDK (what mini-swe-agent's litellm ends up calling)."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float):
        import openai

        self._errors = openai.OpenAIError
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s)

    async def create(self, model: str, messages: list[dict], tools: list[dict]) -> dict:
        try:
            response = await self._client.chat.completions.create(model=model, messages=messages, tools=tools)
        except self._errors as error:
            raise CallFailed(f"{type(error).__name__}: {error}") from None
        return response.choices[0].message.model_dump()

    async def close(self) -> None:
        await self._client.close()


class RawChat:
    """The same call as plain HTTP (aiohttp + orjson): identical bodies, a fraction of the SDK's client CPU. Used to
    load the gate where the SDK's own cost (request transformation and response models) would saturate the box."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float):
        import aiohttp

        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
        self._errors = (aiohttp.ClientError, asyncio.TimeoutError)

    async def create(self, model: str, messages: list[dict], tools: list[dict]) -> dict:
        import orjson

        body = orjson.dumps({"model": model, "messages": messages, "tools": tools})
        try:
            async with self._session.post(self._url, data=body, headers=self._headers) as response:
                payload = await response.read()
                status = response.status
        except self._errors as error:
            raise CallFailed(f"{type(error).__name__}: {error}") from None
        if status != 200:
            raise CallFailed(f"HTTP {status}: {payload[:200]!r}")
        return orjson.loads(payload)["choices"][0]["message"]

    async def close(self) -> None:
        await self._session.close()


CLIENTS = {"openai": OpenAIChat, "raw": RawChat}


@dataclass
class TrafficSpec:
    """One group of agents. `endpoints` are (base_url, api_key) pairs handed out one per episode, round-robin."""

    endpoints: list[tuple[str, str]]
    agents: int
    think_s: float = 0.0  # mean idle time between an answer and the next call (uniform in [0.5, 1.5] x mean)
    episode_turns: int = 30
    first_call_spread_s: float = 0.0  # first calls spread uniformly over this many seconds (no thundering herd)
    seed: int = 0
    model: str = "policy"
    timeout_s: float = 120.0
    client: str = "openai"  # "openai" (the SDK) or "raw" (aiohttp + orjson, same bodies)


class AgentFleet:
    """All agents of the client process; `stats(since, until)` cuts a measurement window out of their records."""

    def __init__(self) -> None:
        self.records: list[tuple[float, float]] = []  # (start, latency) of each answered call
        self.errors: list[str] = []
        self.agents_with_a_turn: set[int] = set()
        self._thought: set[int] = set()
        self._tasks: list[asyncio.Task] = []
        self._next_agent = 0

    async def start(self, spec: TrafficSpec) -> int:
        pool = itertools.cycle(spec.endpoints)
        for k in range(spec.agents):
            agent_id = self._next_agent
            self._next_agent += 1
            rng = random.Random(spec.seed * 1_000_003 + agent_id)
            delay = rng.uniform(0, spec.first_call_spread_s)
            self._tasks.append(asyncio.create_task(self._agent(agent_id, spec, pool, rng, delay)))
        return len(self._tasks)

    async def _agent(self, agent_id: int, spec: TrafficSpec, pool, rng: random.Random, delay: float) -> None:
        await asyncio.sleep(delay)
        while True:
            base_url, api_key = next(pool)
            client = CLIENTS[spec.client](base_url, api_key, spec.timeout_s)
            try:
                messages = first_messages(rng)
                for _ in range(spec.episode_turns):
                    started = time.monotonic()
                    try:
                        message = await client.create(spec.model, messages, TOOLS)
                    except CallFailed as error:
                        self.errors.append(str(error)[:300])
                        await asyncio.sleep(0.5)  # an error is counted and reported; do not spin on it
                        break
                    self.records.append((started, time.monotonic() - started))
                    self.agents_with_a_turn.add(agent_id)
                    messages = [*messages, echo(message)]
                    for call in message.get("tool_calls") or ():
                        messages.append({"role": "tool", "tool_call_id": call["id"], "content": tool_result(rng)})
                    if not message.get("tool_calls"):
                        messages.append({"role": "user", "content": "Continue."})
                    if spec.think_s > 0:
                        # After an agent's very first answer, a uniform phase: the fleet is in steady state at once.
                        first = agent_id not in self._thought
                        self._thought.add(agent_id)
                        await asyncio.sleep(spec.think_s * (rng.uniform(0.0, 1.0) if first else rng.uniform(0.5, 1.5)))
            finally:
                await client.close()

    async def halt(self) -> int:
        """Cancel every agent (closing its client) and forget the records."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=60)
        self.records, self.errors, self.agents_with_a_turn = [], [], set()
        return len(tasks)

    async def stats(self, since: float | None = None, until: float | None = None) -> dict:
        since = float("-inf") if since is None else since
        until = float("inf") if until is None else until
        latencies = [lat for start, lat in self.records if since <= start + lat <= until]  # answered in the window
        return {"latencies": latencies, "errors": list(self.errors), "agents": len(self._tasks),
                "agents_with_a_turn": len(self.agents_with_a_turn), "turns_total": len(self.records)}


def run_client_process(conn) -> None:
    """`Child` target: commands "start" (TrafficSpec), "halt", "stats" (since, until), "snapshot"."""
    from bench.processes import process_snapshot, serve_commands

    async def main() -> None:
        import aiohttp  # noqa: F401 - imported before "ready", so no import lands inside a measurement
        import openai  # noqa: F401

        fleet = AgentFleet()
        conn.send(("ready", {}))

        async def snapshot() -> dict:
            return {**process_snapshot(), "turns_total": len(fleet.records)}

        try:
            await serve_commands(conn, {"start": fleet.start, "halt": fleet.halt, "stats": fleet.stats,
                                        "snapshot": snapshot})
        finally:
            await fleet.halt()

    asyncio.run(main())


def wait_for_turns(clients, agents: int, timeout_s: float) -> dict:
    """Block until every agent of the client process (`Child` running `run_client_process`) was answered once."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = clients.request("stats", 0.0, 0.0)  # an empty window: counts only
        if stats["agents_with_a_turn"] >= agents:
            return stats
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {stats['agents_with_a_turn']} of {agents} agents got an answer within "
                               f"{timeout_s:.0f} s; errors: {stats['errors'][:3]}")
        time.sleep(0.5)
