"""SandboxEpisodeRunner: statuses, budgets, the stop event, failures, grading on the host, and no leaks."""

from __future__ import annotations

import asyncio
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rollout_worker.environment.agents import CommandAgent, MiniSweAgentLauncher, get_agent
from rollout_worker.environment.episode import EpisodeConfig, SandboxEpisodeRunner
from rollout_worker.environment.grading.host import FailPassGrader
from rollout_worker.environment.sandbox import LocalSandboxTestExecutor
from rollout_worker.outcomes import EpisodeStatus as Status
from tests.support.sandboxes import pids_with, sandbox_dirs, wait_until

pytestmark = pytest.mark.timeout(180)


@dataclass
class _Grade:
    reward: float | None
    resolved: bool
    scorable: bool
    details: dict = field(default_factory=dict)


class MarkerGrader:
    """Reward 1 when the agent left a file `done`; records what it saw (fast, for lifecycle tests)."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.graded: list[tuple[Path, bool]] = []

    async def grade(self, task, agent_repo_dir: Path) -> _Grade:
        if self.fail:
            raise RuntimeError("grader exploded")
        done = (agent_repo_dir / "done").exists()
        self.graded.append((agent_repo_dir, done))
        return _Grade(float(done), done, True, {"saw_done": done})


async def _episode(make_gate, runner, task, rollout_id, stop=None):
    gate = await make_gate() if not hasattr(make_gate, "open_rollout") else make_gate
    rollout = await gate.open_rollout(rollout_id)
    try:
        return await runner.run(task, rollout.endpoint, stop or asyncio.Event())
    finally:
        await rollout.close()


async def test_oracle_noop_and_test_tampering_graded_on_the_host(make_gate, backend, task, state_dir):
    grader = FailPassGrader(LocalSandboxTestExecutor())
    gate = await make_gate()
    oracle = await _episode(gate, SandboxEpisodeRunner(backend, get_agent("oracle"), grader), task, "r-oracle")
    assert (oracle.status, oracle.reward, oracle.resolved, oracle.scorable) == (Status.COMPLETED, 1.0, True, True), oracle
    assert oracle.exit_code == 0 and "calc.py" in oracle.agent_output  # git apply --verbose names the file
    assert set(oracle.timings) >= {"sandbox_setup", "agent", "grading"}
    noop = await _episode(gate, SandboxEpisodeRunner(backend, get_agent("noop"), grader), task, "r-noop")
    assert (noop.status, noop.reward, noop.scorable) == (Status.COMPLETED, 0.0, True)
    cheat = get_agent("cmd:printf 'def test_add():\\n    pass\\n\\ndef test_zero():\\n    pass\\n' > tests/test_calc.py")
    cheated = await _episode(gate, SandboxEpisodeRunner(backend, cheat, grader), task, "r-cheat")
    assert (cheated.status, cheated.reward, cheated.scorable) == (Status.COMPLETED, 0.0, True), cheated.details
    assert sandbox_dirs(state_dir) == []


async def test_wall_time_budget_kills_and_still_grades(make_gate, backend, task, state_dir):
    grader = MarkerGrader()
    agent = CommandAgent("touch done; sleep 4545.5")
    runner = SandboxEpisodeRunner(backend, agent, grader, EpisodeConfig(agent_wall_time_s=1.0))
    result = await _episode(make_gate, runner, task, "r-wall")
    assert (result.status, result.reward, result.details["agent_end"]) == (Status.BUDGET, 1.0, "wall_time")
    assert result.timings["agent"] < 8
    assert pids_with("4545.5") == [] and sandbox_dirs(state_dir) == []


async def test_stop_event_ends_the_agent_promptly(make_gate, backend, task, state_dir):
    stop = asyncio.Event()
    runner = SandboxEpisodeRunner(backend, CommandAgent("sleep 4646.5"), MarkerGrader())
    asyncio.get_running_loop().call_later(0.5, stop.set)
    result = await _episode(make_gate, runner, task, "r-stop", stop)
    assert (result.status, result.reward, result.details["agent_end"]) == (Status.BUDGET, 0.0, "stop")
    assert result.timings["agent"] < 8 and pids_with("4646.5") == []


async def test_agent_crash_and_start_failures_are_unscorable(make_gate, backend, task, state_dir, tmp_path):
    grader = MarkerGrader()
    crashed = await _episode(make_gate, SandboxEpisodeRunner(backend, CommandAgent("echo boom >&2; exit 3"), grader),
                             task, "r-crash")
    assert (crashed.status, crashed.reward, crashed.scorable, crashed.exit_code) == (Status.AGENT_ERROR, None, False, 3)
    assert "boom" in crashed.agent_output
    missing = await _episode(make_gate, SandboxEpisodeRunner(backend, MiniSweAgentLauncher(venv=tmp_path), grader),
                             task, "r-missing")
    assert (missing.status, missing.scorable) == (Status.AGENT_ERROR, False) and "bootstrap" in missing.details["reason"]
    no_binary = await _episode(make_gate, SandboxEpisodeRunner(backend, get_agent("cmd:exec /no/such/agent"), grader),
                               task, "r-nobin")
    assert (no_binary.status, no_binary.exit_code) == (Status.AGENT_ERROR, 127)
    assert grader.graded == []  # nothing unscorable was graded
    assert sandbox_dirs(state_dir) == []


async def test_sandbox_and_grader_failures_are_infra_errors(make_gate, backend, task, state_dir, tmp_path):
    broken_task = type(task)(**{**task.__dict__, "repo_dir": str(tmp_path / "missing")})
    no_sandbox = await _episode(make_gate, SandboxEpisodeRunner(backend, get_agent("noop"), MarkerGrader()),
                                broken_task, "r-nosb")
    assert (no_sandbox.status, no_sandbox.reward, no_sandbox.scorable) == (Status.INFRA_ERROR, None, False)
    bad_grader = await _episode(make_gate, SandboxEpisodeRunner(backend, get_agent("noop"), MarkerGrader(fail=True)),
                                task, "r-badgrader")
    assert (bad_grader.status, bad_grader.scorable) == (Status.INFRA_ERROR, False)
    assert "grader exploded" in bad_grader.details["reason"]
    assert sandbox_dirs(state_dir) == []


async def test_cancelled_episode_cleans_up(make_gate, backend, task, state_dir):
    runner = SandboxEpisodeRunner(backend, CommandAgent("sleep 4747.5"), MarkerGrader())
    episode = asyncio.ensure_future(_episode(make_gate, runner, task, "r-cancelled"))
    assert await wait_until(lambda: pids_with("sleep 4747.5") != [], timeout=20)
    episode.cancel()
    with pytest.raises(asyncio.CancelledError):
        await episode
    assert await wait_until(lambda: pids_with("4747.5") == [], timeout=5)
    assert sandbox_dirs(state_dir) == []


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_fifty_rollouts_with_kills_and_timeouts_leave_nothing(make_gate, backend, task, state_dir, tmp_path,
                                                                    monkeypatch, caplog):
    rng = random.Random(1234)
    # A private temp dir: the machine's /tmp is shared with other runs; anything we leave would show up here.
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    gate = await make_gate()
    grader = MarkerGrader()
    behaviours = {
        "exit": "touch done",
        "crash": "exit 7",
        "timeout": "sleep 4848.1",
        "detached": "(setsid sleep 4848.2 &); nohup sleep 4848.3 >/dev/null 2>&1 & touch done; sleep 4848.4",
        "stop": "sleep 4848.5",
        "cancel": "sleep 4848.6",
        "self_kill": "kill -9 $$",
    }
    outcomes = []

    async def one(i: int, kind: str) -> None:
        # Agents that end on their own get a generous budget (the machine is loaded); the rest a short random one.
        wall = 30.0 if kind in ("exit", "crash", "self_kill") else rng.uniform(0.3, 1.5)
        runner = SandboxEpisodeRunner(backend, CommandAgent(behaviours[kind]), grader, EpisodeConfig(agent_wall_time_s=wall))
        stop = asyncio.Event()
        if kind == "stop":
            asyncio.get_running_loop().call_later(rng.uniform(0.05, 0.8), stop.set)
        episode = asyncio.ensure_future(_episode(gate, runner, task, f"r-fifty-{i}", stop))
        if kind == "cancel":
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            episode.cancel()
        try:
            outcomes.append((kind, (await episode).status))
        except asyncio.CancelledError:
            outcomes.append((kind, "cancelled"))

    kinds = [rng.choice(list(behaviours)) for _ in range(50)]
    limiter = asyncio.Semaphore(6)

    async def limited(i, kind):
        async with limiter:
            await one(i, kind)

    await asyncio.gather(*(limited(i, k) for i, k in enumerate(kinds)))
    assert len(outcomes) == 50
    expected = {"exit": Status.COMPLETED, "crash": Status.AGENT_ERROR, "timeout": Status.BUDGET, "detached": Status.BUDGET, "stop": Status.BUDGET,
                "self_kill": Status.AGENT_ERROR}
    for kind, status in outcomes:
        assert status == expected.get(kind, status) or (kind == "cancel" and status in ("cancelled", Status.BUDGET))
    assert await wait_until(lambda: pids_with("4848.") == [], timeout=10)
    assert pids_with(str(state_dir)) == []  # no bwrap or relay of ours survives
    assert sandbox_dirs(state_dir) == [] and list(state_dir.iterdir()) == []
    assert gate.open_rollouts == 0
    assert list(private_tmp.iterdir()) == []
    assert "Unknown child process" not in caplog.text  # every exit status was the real one
