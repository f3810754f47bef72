"""`--cluster ray:ADDRESS` on a real local Ray cluster of three nodes (`ray.cluster_utils.Cluster`: a head and two
workers, each its own raylet, as separate machines would be), two real local engines, the real mini-swe-agent in
bubblewrap, the real `intercept-rl rollouts` and `train` entry points (issue #28, docs/scale.md).

- rollouts spread over the nodes by their sandbox slots, every record names its node and its replica;
- a node removed mid-run: its rollout ends infra_error (unscorable), the run goes on, a node that joins afterwards
  receives rollouts, and nothing is left on the surviving nodes (counted: sandbox directories, processes);
- a short training run over the cluster: the full stack (it replaced tests/e2e/test_trainer_e2e.py, the same run
  with every rollout in the trainer's process, which `make demo`'s and the resume tests' runs still cover), first step
  on-policy, the checkpoint, nothing left behind;
- bad `--cluster` values and an unreachable head are one line before anything starts.

The cluster is shared by the module (the run that removes a node adds one back), the two engines by the package
(tests/rollout_worker/conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.paths import REPO
from tests.support.sandboxes import pids_with, processes_with_marker, run_to_end

SLOTS = "sandbox_slots"


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # num_cpus 1 per node: Ray's own worker pool, not a limit on rollouts (the node actor asks for 0 CPUs).
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {SLOTS: 2},
                                                      "include_dashboard": False})
    try:
        workers = [c.add_node(num_cpus=1, resources={SLOTS: 1}) for _ in range(2)]
        c.wait_for_nodes()
        yield c, workers
    finally:
        c.shutdown()


def _short(node) -> str:
    return node.node_id[:8]


def _rollouts(*argv: str) -> tuple[int, str]:
    """The real CLI in this process (it connects to the cluster and disconnects at the end)."""
    from rollout_worker.cli import main

    return main(list(argv)), ""


def _config(tmp_path: Path) -> tuple[Path, Path]:
    state = tmp_path / "sandboxes"
    config = tmp_path / "run.yaml"
    config.write_text(f"sandbox: {{backend: local, state_dir: {state}}}\n")
    return config, state


def _leftovers(state: Path) -> tuple[list[str], list[int]]:
    dirs = sorted(p.name for p in state.glob("sb-*")) if state.exists() else []
    return dirs, pids_with(str(state))


def _owners(state: Path) -> set[int]:
    """The processes (rollout nodes) that own the sandbox directories under `state`."""
    owners = set()
    for directory in state.glob("sb-*") if state.exists() else []:
        try:
            owners.add(json.loads((directory / "state.json").read_text())["owner_pid"])
        except (OSError, ValueError, KeyError):
            continue  # being written or removed right now
    return owners


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_rollouts_spread_by_slots_survive_a_lost_node_and_use_one_that_joins(cluster, engines, tmp_path):
    c, workers = cluster
    urls = [e.url for e in engines]
    config, state = _config(tmp_path)
    out = tmp_path / "r.jsonl"
    result: dict = {}
    run = threading.Thread(target=lambda: result.update(code=_rollouts(
        "--config", str(config), "--cluster", f"ray:{c.address}", "--engine-url", ",".join(urls),
        "--agent", "mini-swe-agent", "--tasks", "embedded", "--max-tasks", "8", "--max-inflight", "4",
        "--max-turns", "1", "--quiet", "--out", str(out))[0]))
    run.start()
    # The first wave fills every slot (2 + 1 + 1).
    deadline = time.monotonic() + 300
    while len(_owners(state)) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    first_wave = _owners(state)
    assert len(first_wave) == 3, "the first rollouts did not start on every node"
    # Hold every model call (the engines' own pause, as a weight sync does) so that no rollout of a surviving node can
    # end and take the next task before the machine that joins is up: then only that machine has a free slot.
    for url in urls:
        requests.post(f"{url}/pause", timeout=30).raise_for_status()
    try:
        removed = workers[1]
        c.remove_node(removed)  # one worker machine goes away mid-rollout
        joined = c.add_node(num_cpus=1, resources={SLOTS: 1})
        deadline = time.monotonic() + 300
        while not _owners(state) - first_wave and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _owners(state) - first_wave, "the machine that joined got no rollout"
    finally:
        for url in urls:
            requests.post(f"{url}/resume", timeout=30).raise_for_status()
    run.join(timeout=900)
    assert not run.is_alive(), "the run did not end"
    assert result["code"] == 0

    records = _records(out)
    assert len(records) == 8
    by_node = Counter(r["node"].rsplit("/", 1)[1] for r in records)
    lost = [r for r in records if r["node"].endswith(_short(removed))]
    # the lost node's rollout: unscorable, never reward 0
    assert len(lost) == 1 and lost[0]["status"] == "infra_error" and not lost[0]["scorable"], lost
    assert "died" in lost[0]["details"]["error"] or "left" in lost[0]["details"]["error"]
    # every slot of the first wave was used: the head's two, each worker's one; the machine that joined got work
    assert by_node[_short(c.head_node)] >= 2 and by_node[_short(workers[0])] >= 1, by_node
    assert by_node[_short(joined)] >= 1, by_node
    others = [r for r in records if r not in lost]
    assert all(r["scorable"] and r["turns"] >= 1 for r in others), [(r["status"], r["turns"]) for r in others]
    assert {r["replica"] for r in records if r["turns"]} <= set(urls)
    assert {r["replica"] for r in others} == set(urls), "both engine replicas served rollouts"
    # Nothing left on the surviving nodes: no sandbox directory or process of a node that is still alive. (The
    # lost machine's own sandbox directory may stay, as on a machine that died; its processes died with it.)
    dirs, pids = _leftovers(state)
    assert pids == [], "processes of the run are still alive"
    owners = {json.loads((state / d / "state.json").read_text())["owner_pid"] for d in dirs}
    assert len(dirs) <= 1 and all(not Path(f"/proc/{pid}").exists() for pid in owners), (dirs, owners)


@pytest.mark.slow
def test_train_over_the_cluster_full_stack_first_step_on_policy(cluster, tmp_path):
    """`train --preset cpu-demo --engine-replicas 2 --cluster ray:ADDRESS`: the real mini-swe-agent in bubblewrap on the nodes, the local
    engine, host-side grading on the nodes, TRL's AsyncGRPOTrainer and weight sync here; F1 at the first optimizer
    step from the run's own Trackio database, the checkpoint with the worker's state, a clean shutdown."""
    c, _ = cluster
    out = tmp_path / "out"
    config, state = _config(tmp_path)
    argv = [sys.executable, "-m", "intercept_rl_cli", "train", "--preset", "cpu-demo", "--max-steps", "1",
            "--save-steps", "1", "--engine-replicas", "2", "--config", str(config), "--cluster", f"ray:{c.address}", "--output-dir", str(out),
            "--project", "e2e-test"]
    marker_value = uuid.uuid4().hex
    marker = f"INTERCEPT_RL_E2E_MARKER={marker_value}"
    env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "HF_HUB_OFFLINE": "1", "INTERCEPT_RL_E2E_MARKER": marker_value}
    env.pop("TRACKIO_DIR", None)
    code, output = run_to_end(argv, cwd=REPO, env=env, timeout=900)
    assert code == 0, output[-6000:]
    leftovers = processes_with_marker(marker)
    for pid in leftovers:  # clean up before failing, so a failure does not leak into other tests
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    assert leftovers == set(), "the command left processes behind (engine, agents or sandboxes)"
    assert _leftovers(state) == ([], []), "a node left a sandbox behind"

    records = _records(out / "rollouts.jsonl")
    live = {n.node_id[:8] for n in [c.head_node, *c.worker_nodes]}
    assert records and all(r["node"].rsplit("/", 1)[1] in live for r in records), [r["node"] for r in records]
    # --engine-replicas 2: both local engines sampled, and every weight sync was pushed to both and checked there
    assert len({r["replica"] for r in records}) == 2, [r["replica"] for r in records]
    log = (out / "train.log").read_text()
    for version in (1, 2):  # the sync at train begin and the one after step 1, each pushed to both replicas
        assert len(re.findall(rf"weight sync v{version}: ", log)) == 2, log[-3000:]
    with sqlite3.connect(out / "trackio" / "e2e-test.db") as conn:
        rows = [json.loads(m) for (m,) in conn.execute("SELECT metrics FROM metrics ORDER BY id")]
    first = next(m for m in rows if "train/ratio" in m)
    print(f"full-stack F1 over the cluster: ratio={first['train/ratio']!r} kl={first['train/kl']!r}")
    assert abs(first["train/ratio"] - 1.0) <= 1e-5  # sampled on the nodes, trained here: token-exact
    assert first["train/kl"] <= 1e-6
    assert first.get("train/rollout/rollouts_total", 0) >= 2  # real agent episodes produced the step's samples

    worker_state = json.loads((out / "checkpoint-1" / "rollout_worker_state.json").read_text())
    assert worker_state["scheduler"] and "counters" in worker_state
    assert "[intercept-rl] step 1/1" in output
    assert f"TRACKIO_DIR={out / 'trackio'} trackio show --project e2e-test" in output


@pytest.mark.parametrize(("value", "says"), [
    ("nope", "cluster must be 'ray' or 'ray:ADDRESS'"),
    ("ray:somewhere", "is not auto or HOST:PORT"),
    ("ray:127.0.0.1:9", "cannot reach the Ray cluster's head at 127.0.0.1:9"),
])
def test_bad_cluster_is_one_line_before_anything_starts(value, says, tmp_path, capsys):
    from rollout_worker.cli import main

    out = tmp_path / "r.jsonl"
    code = main(["--cluster", value, "--tasks", "embedded", "--agent", "oracle", "--max-tasks", "1",
                 "--out", str(out)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in "\n".join(lines)
    assert lines[-1].startswith("intercept-rl rollouts: ") and says in lines[-1], lines
    assert not out.exists()


def test_the_default_path_never_imports_ray():
    code = ("import sys, rollout_worker.cli, rollout_worker.worker, rollout_worker.factory, trainer.components; "
            "sys.exit('ray' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=300).returncode == 0
