"""Benchmarks: the engine stand-in speaks vLLM's shapes to our real `EngineClient` and the chat shape to the real
`openai` SDK; the helpers compute what they claim; each script runs end to end at a tiny size and prints its tables
(smoke tests: nothing here asserts a timing)."""

from __future__ import annotations

import re
import subprocess
import sys

import openai
import pytest

from bench.agent_traffic import TOOLS, AgentFleet, TrafficSpec, echo
from bench.report import percentile, table, verdict
from bench.standin_engine import canned_tool_call_turn, start_standin
from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer
from rollout_worker.serving.engine_client import EngineClient
from tests.paths import REPO


@pytest.fixture(scope="module")
def turn():
    return canned_tool_call_turn(load_qwen3_tokenizer(), TOOLS)


@pytest.fixture
async def standin(turn):
    runner, url, engine = await start_standin(turn)
    yield url, engine
    await runner.cleanup()


def test_canned_turn_parses_to_a_tool_call(turn):
    assert turn.token_ids[-1] == load_qwen3_tokenizer().convert_tokens_to_ids("<|im_end|>")
    assert len(turn.logprobs) == len(turn.token_ids) and all(lp < 0 for lp in turn.logprobs)
    (call,) = turn.message["tool_calls"]
    assert call["function"]["name"] == "bash"
    assert "parse_header" in call["function"]["arguments"]
    assert turn.message.get("reasoning_content")


async def test_standin_answers_the_engine_client_in_vllm_shape(standin, turn):
    url, engine = standin
    async with EngineClient(url, "policy") as client:
        assert await client.max_model_len() == 1_000_000
        completion = await client.complete([1, 2, 3, 4], max_tokens=64)
    assert completion.token_ids == turn.token_ids
    assert completion.logprobs == pytest.approx(turn.logprobs)
    assert completion.finish_reason == "stop" and completion.prompt_tokens == 4
    assert engine.counts == {"completions": 1, "chat": 0}


async def test_standin_chat_route_through_the_openai_sdk(standin, turn):
    url, engine = standin
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=10)
    try:
        messages = [{"role": "user", "content": "fix it"}]
        first = await client.chat.completions.create(model="policy", messages=messages, tools=TOOLS)
        second = await client.chat.completions.create(model="policy", messages=messages, tools=TOOLS)
    finally:
        await client.close()
    calls = [r.choices[0].message.tool_calls[0] for r in (first, second)]
    assert calls[0].function.arguments == turn.message["tool_calls"][0]["function"]["arguments"]
    assert calls[0].id != calls[1].id  # fresh ids per answer, like a real server
    assert first.choices[0].finish_reason == "tool_calls"
    echoed = echo(first.choices[0].message.model_dump())
    assert echoed["content"] is None and echoed["tool_calls"][0]["id"] == calls[0].id
    assert engine.counts["chat"] == 2


@pytest.mark.parametrize("client", ["raw", "openai"])
async def test_agent_fleet_grows_its_history_and_windows_its_records(standin, client):
    url, _ = standin
    fleet = AgentFleet()
    await fleet.start(TrafficSpec(endpoints=[(url + "/v1", "none")], agents=3, episode_turns=4, client=client))
    import asyncio

    async with asyncio.timeout(30):
        while len(fleet.records) < 12:
            await asyncio.sleep(0.05)
    everything = await fleet.stats()
    assert everything["agents_with_a_turn"] == 3 and not everything["errors"]
    assert len(everything["latencies"]) >= 12
    middle = sorted(start for start, _ in fleet.records)[5]
    windowed = await fleet.stats(since=middle)
    assert 0 < len(windowed["latencies"]) < len(everything["latencies"])
    assert await fleet.halt() == 3
    assert (await fleet.stats())["latencies"] == []


def test_multiturn_learning_judges_rollouts_by_the_version_that_sampled_them():
    from bench.multiturn_learning import reward_by_version, rise

    records = [{"scorable": True, "reward": r, "model_version": v} for v, r in
               [(1, 0.0), (1, 1.0), (2, 0.0), (3, 1.0), (4, 1.0), (4, 1.0), (5, 0.0), (5, 1.0)]]
    records += [{"scorable": False, "reward": None, "model_version": 5}, {"scorable": True, "reward": 1.0}]
    by_version = reward_by_version(records)
    assert by_version == {1: [0.0, 1.0], 2: [0.0], 3: [1.0], 4: [1.0, 1.0], 5: [0.0, 1.0]}
    assert rise(by_version, 2) == (1 / 3, 3 / 4, 3, 4)  # versions 1-2 vs 4-5, each rollout once
    assert rise(by_version, 3) == rise(by_version, 2)  # 5 versions: the windows take 2 each, never overlapping
    with pytest.raises(ValueError, match="no first and last window"):
        rise({1: [1.0]}, 3)


def test_report_helpers():
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0], 100) == 2.0
    assert percentile([], 50) != percentile([], 50)  # NaN
    text = table(["a", "bb"], [[1, 2.5], ["x", 12345.0]])
    assert text.splitlines() == ["a |     bb", "--+-------", "1 |    2.5", "x | 12,345"]
    assert verdict("p99", 4.0, 5.0, "ms").endswith("-> met")
    assert verdict("rate", 10.0, 20.0, "x/s", higher_is_better=True).endswith("-> NOT met")


def run_script(name: str, *args: str, timeout: int = 500, machine_line: bool = True) -> str:
    proc = subprocess.run([sys.executable, f"bench/{name}.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    if machine_line:  # our scripts say what they ran on (tokenize_scaling, by another hand, does not)
        assert re.search(r"^machine: \d+ cores .*load average", proc.stdout, re.M)
    return proc.stdout


def table_rows(output: str, header_start: str) -> list[list[str]]:
    """The rows of the table whose header line starts with `header_start`."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if " | " not in line:
            break
        rows.append([cell.strip() for cell in line.split(" | ")])
    return rows


@pytest.mark.slow
@pytest.mark.bench  # 75 s on an idle 2-core box: `make test-bench`, outside CI
def test_gate_overhead_script_prints_its_tables():
    out = run_script("gate_overhead", "--concurrency", "1", "3", "--duration", "1", "--warmup", "0.5",
                     "--paced-rate", "20", "--sdk-rate", "5")
    throughput = table_rows(out, "rollouts | direct turns/s")
    assert [row[0] for row in throughput] == ["1", "3"]
    for row in throughput:
        assert all(float(value.replace(",", "")) > 0 for value in row[1:4])  # every path served turns
    for header in ("Latency per turn (ms), paced raw-HTTP", "Latency per turn (ms), paced async openai-SDK"):
        rows = table_rows(out[out.index(header):], "rollouts | turns/s")
        assert len(rows) == 2
        assert all(row[-2] == "0" and row[-1] == "0" for row in rows), rows  # no errors, no forks
    assert len(re.findall(r"^target: .* -> (met|NOT met)$", out, re.M)) == 4


@pytest.mark.slow
@pytest.mark.bench  # 61 s on an idle 2-core box: `make test-bench`, outside CI
def test_concurrency_script_prints_its_tables():
    out = run_script("concurrency", "--levels", "4", "8", "--window", "2", "--think-s", "0.5")
    memory = table_rows(out, "open rollouts | RSS delta MB")
    assert [row[0] for row in memory] == ["4", "8"]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in memory)  # heap traced, token buffers counted
    latency = table_rows(out, "path | turns/s")
    assert [row[0] for row in latency] == ["direct", "gated", "added"]
    assert all(int(row[-1]) > 0 for row in latency[:2])  # latency samples on both paths
    assert re.search(r"^target: added p99 at 8 open rollouts <= 10 ms: .* -> (met|NOT met)$", out, re.M)


@pytest.mark.slow
@pytest.mark.bench  # ~27 s (two TRL steps per mode): `make test-bench`, outside CI
def test_cpu_train_step_script_prints_its_table():
    out = run_script("cpu_train_step", "--budgets", "128", "--modes", "full", "lora", "--steps", "2")
    rows = table_rows(out, "token budget | mode")
    assert [(row[0], row[1]) for row in rows] == [("128", "full"), ("128", "lora")]
    for row in rows:
        assert float(row[2]) == 128 and float(row[3]) == 64  # one packed row of the budget, half of it trained
        assert float(row[4]) > 0 and float(row[11]) > 0  # TRL and plain-torch step times measured


@pytest.mark.slow
@pytest.mark.bench  # ~19 s: `make test-bench`, outside CI
def test_tokenize_scaling_script_prints_its_table():
    out = run_script("tokenize_scaling", "--quick", machine_line=False)
    assert "held tokens" in out and "0 forks" in out
    assert len(re.findall(r"^target: .* -> (met|NOT met)$", out, re.M)) == 2


@pytest.mark.slow
@pytest.mark.bench  # ~60 s: `make test-bench`, outside CI
def test_gate_shards_script_prints_its_tables():
    out = run_script("gate_shards", "--concurrency", "4", "--duration", "1", "--warmup", "0.3", "--paced-rate", "20")
    throughput = table_rows(out, "rollouts | 1 shard turns/s")
    assert [row[0] for row in throughput] == ["4"] and all(float(v) > 0 for v in throughput[0][1:3])
    latency = table_rows(out, "rollouts | shards")
    assert [(row[0], row[1]) for row in latency] == [("4", "1"), ("4", "2")]
    assert all(row[-1] == "0" for row in latency), latency  # no errors through either layout
    assert re.search(r"^target: turns/s through 2 gate shards / 1 .* -> (met|NOT met)$", out, re.M)


@pytest.mark.slow
@pytest.mark.bench  # ~20 s: a real Ray instance
def test_ray_overhead_script_prints_its_table():
    out = run_script("ray_overhead", "--tokens", "1000", "--calls", "5")
    rows = table_rows(out, "context tokens | pickled MB")
    assert [row[0] for row in rows] == ["1000"] and float(rows[0][3]) > float(rows[0][2]) > 0


@pytest.mark.slow
@pytest.mark.bench  # ~30 s (a 160k-token page in headless Chromium): `make test-bench`, outside CI
def test_inspect_page_script_prints_its_table():
    out = run_script("inspect_page", "--tokens", "20000")
    (row,) = table_rows(out, "tokens | sampled")
    tokens, rendered = (int(cell.replace(",", "")) for cell in (row[0], row[4]))
    assert tokens >= 20_000 and rendered == tokens  # every token became a span
    assert len(re.findall(r"^target: .* -> (met|NOT met)$", out, re.M)) == 2


@pytest.mark.slow
@pytest.mark.long  # the default warm start (~30 min to build once, then cached) and ~6 min of GRPO: `make test-long`
def test_multiturn_learning_script_prints_its_tables(tmp_path):
    out = run_script("multiturn_learning", "--quick", "--output-dir", str(tmp_path), timeout=3600)
    steps = table_rows(out, "step | reward")
    assert [int(row[0]) for row in steps] == [1, 2, 3, 4]
    assert all(float(row[3]) >= 1 for row in steps)  # turns per rollout, from the run's own metrics lines
    (seed,) = table_rows(out, "seed | solve rate")
    assert seed[0] == "0" and int(seed[2]) >= 1 and float(seed[6]) >= 1  # rollouts in the first window; turns
    assert re.search(r"^target: the smallest rise over the seeds .* -> (met|NOT met) \(--quick", out, re.M)

