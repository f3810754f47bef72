"""Injected faults over many real rollouts: the engine answering 5xx, truncated bodies, null logprobs, hanging up,
going away and coming back; agents killed mid-turn; sandboxes killed under them. Failed rollouts must be unscorable
(never reward 0), groups complete and correct, and afterwards 0 leaked processes, sockets, sandboxes or temp dirs.

Real parts: the local engine (tiny Qwen3) behind a fault-injecting HTTP proxy, the real worker and gate, the real
single-shot agent in bubblewrap sandboxes, host-side grading in fresh sandboxes. The quick slice runs ~24 rollouts,
the full one (RELIABILITY_FULL=1) 500.
"""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from intercept_common.engine_process import LocalEngineProcess
from intercept_common.http_site import start_site
from intercept_common.loop_thread import LoopThread
from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer
from local_engine.embedded import ensure_tiny_model
from rollout_worker.config import WorkerConfig
from rollout_worker.environment.episode import EpisodeConfig
from rollout_worker.environment.grading.host import GradingConfig
from rollout_worker.environment.sandbox.docker.config import DEFAULT_BASE_IMAGE, OWNER_PID_LABEL
from rollout_worker.environment.tasks import load_tasks
from rollout_worker.factory import EpisodeOptions, build_episode_runner, build_worker
from tests.support.docker import PrivateDockerd, docker_client_or_skip, sandbox_containers
from tests.support.sandboxes import pids_with, sandbox_dirs

from .conftest import FULL, scaled

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

FAULTS = ("pass", "pass", "pass", "http_500", "http_503_burst", "truncated_body", "null_logprobs", "hang_up",
          "engine_away")


class FaultyEngine:
    """A proxy in front of the real engine that injects one fault per completion call, chosen by a seeded RNG."""

    def __init__(self, upstream: str, seed: int) -> None:
        self.upstream = upstream
        self.rng = random.Random(seed)
        self.injected: Counter[str] = Counter()
        self.away_until = 0.0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session = None

    async def start(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.url = await start_site(app)

    async def stop(self) -> None:
        await self._runner.cleanup()
        await self._session.close()

    async def _forward(self, request: web.Request) -> tuple[int, bytes, str]:
        async with self._session.request(request.method, self.upstream + request.path_qs, data=await request.read(),
                                         headers={"Content-Type": "application/json"}) as resp:
            return resp.status, await resp.read(), resp.content_type

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if time.monotonic() < self.away_until:  # the engine is "restarting": refuse like a closed port would
            request.transport.close()
            return web.Response(status=503)
        if request.path != "/v1/completions":
            status, body, content_type = await self._forward(request)
            return web.Response(status=status, body=body, content_type=content_type)
        fault = self.rng.choice(FAULTS)
        self.injected[fault] += 1
        if fault == "http_500":
            return web.json_response({"error": {"message": "injected", "type": "server_error"}}, status=500)
        if fault == "http_503_burst":  # the client retries 503s: the next calls fail too, then it recovers
            return web.json_response({"error": {"message": "injected overload"}}, status=503)
        if fault == "engine_away":
            self.away_until = time.monotonic() + self.rng.uniform(0.5, 3.0)
            request.transport.close()
            return web.Response(status=503)
        if fault == "hang_up":
            request.transport.close()
            return web.Response(status=503)
        status, body, content_type = await self._forward(request)
        if fault == "truncated_body":
            body = body[: len(body) // 2]
        elif fault == "null_logprobs" and status == 200:
            decoded = json.loads(body)
            decoded["choices"][0]["logprobs"]["token_logprobs"] = None
            body = json.dumps(decoded).encode()
        return web.Response(status=status, body=body, content_type=content_type)


def _kill_random_sandbox_processes(rng: random.Random, marker: str) -> int:
    """SIGKILL one process of a running sandbox (an agent mid-turn, or its sandbox's init)."""
    pids = pids_with(marker)
    if not pids:
        return 0
    try:
        os.kill(rng.choice(pids), signal.SIGKILL)
    except ProcessLookupError:
        return 0
    return 1


def _kill_random_container(rng: random.Random, client) -> int:
    """Kill one of this process's sandbox containers (the Docker twin of killing a sandbox's processes)."""
    try:  # listing races with containers the backend removes meanwhile (the SDK then raises NotFound)
        ours = [c for c in sandbox_containers(client) if c.labels.get(OWNER_PID_LABEL) == str(os.getpid())]
        if not ours:
            return 0
        rng.choice(ours).kill()
    except Exception:  # it ended on its own meanwhile
        return 0
    return 1


@pytest.mark.parametrize("backend", ["local", "docker"])
def test_faults_over_many_rollouts_leave_correct_groups_and_nothing_behind(tmp_path, monkeypatch, backend):
    client = docker_client_or_skip() if backend == "docker" else None
    daemon = None
    if client is not None and FULL and os.geteuid() == 0 and shutil.which("dockerd"):
        # The full Docker run also restarts dockerd halfway: on a private one (its own socket and data root, the
        # base image copied in), so that the restart touches nothing else on the machine.
        daemon = PrivateDockerd(Path(tempfile.mkdtemp(prefix="irl-fdd-", dir="/tmp")))
        client = daemon.start()
        save = subprocess.Popen(["docker", "save", DEFAULT_BASE_IMAGE], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "-H", daemon.host, "load", "-q"], stdin=save.stdout, capture_output=True,
                              timeout=300)
        save.wait(60)
        assert load.returncode == 0, load.stderr
        monkeypatch.setenv("DOCKER_HOST", daemon.host)
    try:
        _fault_run(tmp_path, monkeypatch, backend, client, daemon)
    finally:
        if daemon is not None:
            daemon.stop()


def _fault_run(tmp_path, monkeypatch, backend, client, daemon) -> None:
    groups = scaled(6, 125)
    state_dir = Path(tempfile.mkdtemp(prefix="irl-flt-"))
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))  # graders' and relays' temp dirs, counted below
    rng = random.Random(20261130)
    loop_thread = LoopThread("faulty-engine", call_timeout_s=60)
    loop_thread.start()
    worker = None
    records: list[dict] = []
    kills, restarted = 0, None
    try:
        with LocalEngineProcess(str(ensure_tiny_model()), served_model_name="policy", max_model_len=2048) as engine:
            proxy = FaultyEngine(engine.url, seed=7)
            loop_thread.run(proxy.start())
            tasks = load_tasks("learning")
            runner = build_episode_runner(
                EpisodeOptions(agent="single-shot", sandbox=backend, sandbox_options={"state_dir": str(state_dir)}),
                EpisodeConfig(agent_wall_time_s=60), GradingConfig(reward_mode="fraction"))
            config = WorkerConfig(num_generations=4, max_inflight=4, max_tokens_per_turn=16, max_turns=2,
                                  max_groups=groups, keep_trajectories=True, drop_zero_variance_groups=False,
                                  engine_timeout_s=30, episode_timeout_s=240, seed=1)
            worker = build_worker(config, tasks=tasks, episode_runner=runner, tokenizer=load_qwen3_tokenizer(),
                                  engine_url=proxy.url)
            worker.start()
            deadline = time.monotonic() + scaled(600, 3000)
            while len(records) < groups * 4 and time.monotonic() < deadline:
                try:
                    records.append(worker.trajectories.get(timeout=0.5))
                except queue.Empty:
                    worker.check_health(stale_after_s=3600)
                if rng.random() < 0.08:
                    kills += (_kill_random_container(rng, client) if client is not None
                              else _kill_random_sandbox_processes(rng, str(state_dir)))
                if daemon is not None and not restarted and len(records) >= groups * 2:
                    client, restarted = daemon.restart(), time.monotonic()  # every running container dies
            worker.stop()
            loop_thread.run(proxy.stop())
    finally:
        if worker is not None:
            worker.stop()
        loop_thread.stop()
    assert len(records) == groups * 4, f"{len(records)} of {groups * 4} rollouts finished"
    by_group = Counter(r["group_id"] for r in records)
    assert set(by_group.values()) == {4}  # every group complete, none over-filled
    statuses = Counter(str(r["status"]) for r in records)
    for rec in records:
        if rec["details"].get("turn_end") == "engine_error" or rec["status"] in ("infra_error", "agent_error"):
            assert not rec["scorable"] and rec["reward"] is None, rec  # never a silent reward 0
        if rec["scorable"]:
            assert 0.0 <= rec["reward"] <= 1.0
    # Each fault the client must not retry (a 500, a cut body, null logprobs) ended its rollout as infra_error.
    fatal = sum(proxy.injected[k] for k in ("http_500", "truncated_body", "null_logprobs"))
    assert statuses["infra_error"] >= fatal
    failed = sum(not r["scorable"] for r in records)
    assert failed > 0 and failed < len(records)  # the faults bit, and training material still came through
    leaked = {"processes": pids_with(str(state_dir)), "sandboxes": sandbox_dirs(state_dir),
              "sockets": [p for p in state_dir.rglob("*.sock")], "temp dirs": list(private_tmp.iterdir()),
              "containers": [c.name for c in sandbox_containers(client)
                             if c.labels.get(OWNER_PID_LABEL) == str(os.getpid())] if client is not None else []}
    print(f"\nfaults ({backend}{', dockerd restarted once' if restarted else ''}): {len(records)} rollouts, "
          f"injected {dict(proxy.injected)}, {kills} sandbox processes killed; "
          f"statuses {dict(statuses)}; unscorable {failed}; leaks {({k: len(v) for k, v in leaked.items()})}")
    assert not any(leaked.values()), leaked


def test_stopping_the_worker_mid_rollouts_leaves_nothing(tmp_path, monkeypatch):
    """The worker stopped while agents are mid-turn (trainer shutdown, pre-emption): every sandbox, agent and grading
    dir goes, and no record claims a reward it did not earn."""
    state_dir = Path(tempfile.mkdtemp(prefix="irl-stp-"))
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    with LocalEngineProcess(str(ensure_tiny_model()), served_model_name="policy", max_model_len=2048) as engine:
        runner = build_episode_runner(
            EpisodeOptions(agent="cmd:python3 -c 'import time; time.sleep(3600)'", sandbox="local",
                           sandbox_options={"state_dir": str(state_dir)}),
            EpisodeConfig(agent_wall_time_s=600), GradingConfig(reward_mode="fraction"))
        config = WorkerConfig(num_generations=2, max_inflight=4, keep_trajectories=True, seed=3)
        worker = build_worker(config, tasks=load_tasks("learning"), episode_runner=runner,
                              tokenizer=load_qwen3_tokenizer(), engine_url=engine.url)
        worker.start()
        try:
            deadline = time.monotonic() + 120
            while len(pids_with("time.sleep(3600)")) < 4 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(pids_with("time.sleep(3600)")) >= 4, "the agents never started"
        finally:
            worker.stop()
    records = []
    while not worker.trajectories.empty():
        records.append(worker.trajectories.get_nowait())
    assert all(not r["scorable"] or r["status"] != "completed" for r in records)
    leaked = {"processes": pids_with(str(state_dir)) + pids_with("time.sleep(3600)"),
              "sandboxes": sandbox_dirs(state_dir), "temp dirs": list(private_tmp.iterdir())}
    print(f"\nworker stopped mid-rollouts: {len(records)} records, leaks {({k: len(v) for k, v in leaked.items()})}")
    assert not any(leaked.values()), leaked
