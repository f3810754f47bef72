"""`intercept-rl doctor` on this machine: green when everything is installed, and a named remedy when not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO

ROOT = REPO


def _doctor(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path if path is not None else os.environ["PATH"]}
    return subprocess.run([sys.executable, "-m", "intercept_rl_cli", "doctor", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_doctor_passes_on_a_bootstrapped_machine():
    proc = _doctor()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for name in ("python", "bubblewrap as this user", "project venv", "embedded model", "disk", "node",
                 "mini-swe-agent", "pi", "chromium", "docker"):
        assert any(line.split(":")[0].split(None, 1)[1] == name for line in lines[:-1]), (name, proc.stdout)
    assert "ok   project venv: matches its lock" in lines
    assert not any(line.startswith("FAIL") for line in lines), proc.stdout
    assert lines[-1].startswith("doctor: ") and lines[-1].endswith(" 0 failed")


def test_doctor_names_a_missing_bubblewrap_and_its_remedy(tmp_path: Path):
    """bwrap hidden from PATH: one FAIL line naming it with the install command, exit status 1."""
    bwrap = shutil.which("bwrap")
    assert bwrap, "bubblewrap must be installed for this test (scripts/bootstrap.sh installs it)"
    hidden = tmp_path / "bin"
    hidden.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin"):  # everything the doctor may call, except bwrap
        for entry in Path(directory).iterdir():
            target = hidden / entry.name
            if entry.name != "bwrap" and not target.exists():
                target.symlink_to(entry)
    proc = _doctor(path=str(hidden))
    assert proc.returncode == 1, proc.stdout
    assert "FAIL bubblewrap: bwrap not found on PATH  -> apt-get install bubblewrap (or run scripts/bootstrap.sh)" \
        in proc.stdout.splitlines()
    assert proc.stdout.splitlines()[-1].endswith(" 1 failed")


def test_doctor_requires_docker_only_when_asked(tmp_path: Path):
    """Without a docker CLI, `--docker` turns the warning into a failure with its remedy."""
    empty = tmp_path / "bin"
    empty.mkdir()
    for tool in ("bwrap", "setpriv", "node", "chromium"):
        found = shutil.which(tool)
        if found:
            (empty / tool).symlink_to(found)
    plain = _doctor(path=str(empty))
    assert "warn docker: docker CLI not found  -> apt-get install docker.io" in plain.stdout.splitlines()
    required = _doctor("--docker", path=str(empty))
    assert required.returncode == 1
    assert "FAIL docker: docker CLI not found  -> apt-get install docker.io" in required.stdout.splitlines()


def test_doctor_gpu_checks_fail_clearly_without_a_gpu():
    """On this CPU machine `--gpu` must say that torch sees no GPU and exit 1 (the GPU box runs it for real)."""
    proc = _doctor("--gpu")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert any(line.startswith("FAIL cuda: torch ") and line.endswith("(see README: GPU)") for line in lines), lines
    assert any(line.startswith("ok   vllm flags: serve with: VLLM_SERVER_DEV_MODE=1 vllm serve") for line in lines)
