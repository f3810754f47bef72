"""Every command's user-fixable failure reads as one line with its remedy and a non-zero exit, never a traceback:
engine unreachable or dying, Docker down, bad task rows, bad YAML, a missing agent install, a port in use, a full
disk (or an unwritable output dir)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.paths import REPO


def _cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "intercept_rl_cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def _one_line_error(proc: subprocess.CompletedProcess, command: str, *needles: str) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    last = lines[-1]
    assert last.startswith(f"intercept-rl {command}: "), proc.stderr[-2000:]
    for needle in needles:
        assert needle in last, (needle, last)
    return last


# The failures found before anything starts, run through the real dispatcher in one probe process
# (tests/support/cli_probe.py): the heavy imports are paid once instead of once per case. Each case: (argv with {tmp}
# for the module's directory, the command the one line names, the words it must hold[, environment for that case]).
EARLY_FAILURES = {
    "rollouts_engine_unreachable": (
        ["rollouts", "--engine-url", "http://127.0.0.1:9", "--tasks", "learning", "--agent", "single-shot",
         "--out", "{tmp}/r.jsonl"], "rollouts", ["cannot reach the engine at http://127.0.0.1:9", "is it running?"]),
    "train_vllm_unreachable": (
        ["train", "--preset", "learning-demo", "--vllm-url", "http://127.0.0.1:9", "--output-dir", "{tmp}/out"],
        "train", ["http://127.0.0.1:9"]),
    "rollouts_bad_task_rows": (
        ["rollouts", "--tasks", "{tmp}/tasks.jsonl", "--engine-url", "http://127.0.0.1:9"], "rollouts",
        ["no valid tasks", "repo"]),
    "train_bad_task_rows": (
        ["train", "--preset", "learning-demo", "--tasks", "{tmp}/tasks.jsonl", "--output-dir", "{tmp}/o"], "train",
        ["no valid tasks", "repo"]),
    "rollouts_bad_yaml": (["rollouts", "--config", "{tmp}/bad.yaml"], "rollouts", ["{tmp}/bad.yaml"]),
    "train_bad_yaml": (["train", "--config", "{tmp}/bad.yaml", "--output-dir", "{tmp}/o"], "train", ["{tmp}/bad.yaml"]),
    "engine_port_in_use": (["engine", "--model", "embedded", "--port", "{busy_port}"], "engine",
                           ["already in use", "--port"]),
    "train_output_dir_not_writable": (["train", "--preset", "learning-demo", "--output-dir", "/dev/full/run"], "train",
                                      ["cannot write to /dev/full/run", "--output-dir"]),
    "rollouts_docker_down": (
        ["rollouts", "--sandbox", "docker", "--tasks", "learning", "--agent", "single-shot", "--engine-url",
         "http://127.0.0.1:9", "--out", "{tmp}/r.jsonl"], "rollouts", ["no Docker engine reachable", "--sandbox local"],
        {"DOCKER_HOST": "unix://{tmp}/no-docker.sock"}),
    "train_docker_down": (
        ["train", "--preset", "learning-demo", "--sandbox", "docker", "--output-dir", "{tmp}/o"], "train",
        ["no Docker engine reachable"], {"DOCKER_HOST": "unix://{tmp}/no-docker.sock"}),
    "rollouts_agent_not_installed": (
        ["rollouts", "--agent", "mini-swe-agent", "--engine-url", "http://127.0.0.1:9", "--out", "{tmp}/r.jsonl"],
        "rollouts", ["not installed", "make setup"], {"INTERCEPT_RL_AGENTS_VENV": "{tmp}/empty-venv"}),
    "train_agent_not_installed": (
        ["train", "--preset", "cpu-demo", "--agent", "pi", "--output-dir", "{tmp}/o"], "train",
        ["'pi' is not installed", "make setup"], {"INTERCEPT_RL_PI_PREFIX": "{tmp}/np"}),
}


@pytest.fixture(scope="module")
def early_failures(tmp_path_factory):
    """Every EARLY_FAILURES case's result ({code, stderr, traceback, ...}) by name, from one probe process."""
    tmp = tmp_path_factory.mktemp("early")
    (tmp / "tasks.jsonl").write_text('{"instance_id": "x"}\n{"instance_id": "y", "repo": ""}\n')
    (tmp / "bad.yaml").write_text("worker: [\n  num_generations: 2\n")
    with socket.socket() as busy:  # held for the whole probe: the engine case finds its port taken
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        fill = {"{tmp}": str(tmp), "{busy_port}": str(busy.getsockname()[1])}

        def filled(text: str) -> str:
            for key, value in fill.items():
                text = text.replace(key, value)
            return text

        cases = {name: ([filled(a) for a in argv], command, [filled(n) for n in needles],
                        {k: filled(v) for k, v in (env[0] if env else {}).items()})
                 for name, (argv, command, needles, *env) in EARLY_FAILURES.items()}
        (tmp / "cases.json").write_text(json.dumps([{"argv": argv, "env": env} for argv, _, _, env in cases.values()]))
        proc = subprocess.run([sys.executable, "-m", "tests.support.cli_probe", str(tmp / "cases.json")], cwd=REPO,
                              capture_output=True, text=True, timeout=800,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "TRACKIO_DIR": str(tmp / "trackio")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    return {name: (case, result) for (name, case), result in zip(cases.items(), results, strict=True)}


@pytest.mark.parametrize("name", list(EARLY_FAILURES))
def test_failure_found_before_anything_starts_is_one_line(early_failures, name):
    (argv, command, needles, _), result = early_failures[name]
    proc = subprocess.CompletedProcess(argv, result["code"], "", result["stderr"])
    assert result["traceback"] is None, result["traceback"]
    _one_line_error(proc, command, *needles)
    assert not result["children"], result  # nothing it started is left running


@pytest.mark.slow
def test_train_gate_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _cli("train", "--preset", "learning-demo", "--max-steps", "1", "--gate-port", str(port),
                    "--output-dir", str(tmp_path / "o"), "--report-to", "none")
    _one_line_error(proc, "train", "already in use", "--gate-port")


def test_low_disk_space_is_refused_up_front(tmp_path, monkeypatch):
    import shutil

    from rollout_worker.preflight import PreflightError, check_writable

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10 * 2**20))
    with pytest.raises(PreflightError, match=r"only 10 MB free .* free some space or choose another --output-dir"):
        check_writable(tmp_path / "run")


@pytest.mark.slow
def test_rollouts_disk_full_while_writing():
    """A real ENOSPC: /dev/full accepts the open and fails every write."""
    proc = _cli("rollouts", "--tasks", "learning", "--agent", "noop", "--num-generations", "1", "--out", "/dev/full",
                timeout=600)
    _one_line_error(proc, "rollouts", "no space left on the device writing /dev/full", "--out")


@pytest.mark.slow
def test_rollouts_engine_dies_mid_run(tmp_path):
    """The engine is killed while a group of 64 rollouts runs (records only come when the group completes)."""
    out = tmp_path / "r.jsonl"
    argv = [sys.executable, "-m", "intercept_rl_cli", "rollouts", "--tasks", "learning", "--agent", "single-shot",
            "--num-generations", "64", "--max-inflight", "1", "--max-tokens-per-turn", "4", "--max-turns", "1",
            "--out", str(out)]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 400
        while not out.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)  # the output opens once the engine is healthy and the worker started
        time.sleep(3)
        engines = [pid for pid in _children(proc.pid) if b"intercept_rl_cli\0engine" in _cmdline(pid)]
        assert len(engines) == 1
        os.kill(engines[0], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = subprocess.CompletedProcess(argv, proc.returncode, "", stderr)
    _one_line_error(done, "rollouts", "the local engine exited with code -9", "during the run")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # a sandbox that just ended
        return b""


def _children(pid: int) -> list[int]:
    found, deadline = [], time.monotonic() + 5
    while not found and time.monotonic() < deadline:  # direct children only (the engine is one)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
        time.sleep(0.1)
    return found


@pytest.mark.slow
def test_train_engine_dies_mid_run(tmp_path):
    """The local engine is killed after the first step: the run ends in one line instead of waiting forever."""
    argv = [sys.executable, "-m", "intercept_rl_cli", "train", "--preset", "learning-demo", "--max-steps", "30",
            "--num-generations", "4", "--per-device-train-batch-size", "4", "--max-inflight", "4",
            "--output-dir", str(tmp_path / "out"), "--report-to", "none"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    try:
        for line in proc.stdout:
            if line.startswith("[intercept-rl] step 1/"):
                break
        engines = [pid for pid in _children(proc.pid) if b"intercept_rl_cli\0engine" in _cmdline(pid)]
        assert len(engines) == 1
        os.kill(engines[0], signal.SIGKILL)
        started = time.monotonic()
        _, stderr = proc.communicate(timeout=300)
        print(f"the run ended {time.monotonic() - started:.0f} s after the engine was killed")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = subprocess.CompletedProcess(argv, proc.returncode, "", stderr)
    _one_line_error(done, "train", "stopped answering during training", "Rerun")
