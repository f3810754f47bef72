"""Every environment the project creates matches its committed lock (drift is a red line naming the package)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from doctor import locks

ROOT = locks.PROJECT_ROOT


def _fail_on(drift: locks.Drift) -> None:
    assert not drift, "environment drifted from its lock (run `make setup`, or `make lock` if intended):\n" + \
        "\n".join(drift.lines())


def test_project_venv_matches_its_lock():
    _fail_on(locks.pip_environment_drift(".venv", ROOT / ".venv" / "bin" / "python", locks.LOCKS / "project.txt"))


def test_agents_venv_matches_its_lock():
    python = ROOT / ".venv-agents" / "bin" / "python"
    assert python.exists(), "the agents' venv is missing: run scripts/bootstrap.sh"
    _fail_on(locks.pip_environment_drift(".venv-agents", python, locks.LOCKS / "agents.txt"))


@pytest.mark.parametrize("agent", sorted(p.name for p in (locks.LOCKS / "npm").iterdir()))
def test_npm_agent_matches_its_lock(agent):
    prefix = ROOT / ".agents" / agent
    assert (prefix / "node_modules").is_dir(), f"{prefix} is not installed: run scripts/bootstrap.sh"
    _fail_on(locks.npm_environment_drift(agent, prefix, locks.LOCKS / "npm" / agent / "package-lock.json"))


def test_every_lock_pins_with_hashes():
    """Hash-checked installs: every pin of the pip locks carries at least one sha256 (pip --require-hashes)."""
    for lock in ("project.txt", "agents.txt"):
        text = (locks.LOCKS / lock).read_text()
        pins = locks.read_pip_lock(locks.LOCKS / lock)
        assert text.count("==") - text.count("--hash=sha256:") <= 0 and len(pins) > 10, lock
        assert "torch" not in pins, "torch must stay out of the lock (CPU wheel here, CUDA build on GPU boxes)"
    for lock_dir in (locks.LOCKS / "npm").iterdir():
        packages = json.loads((lock_dir / "package-lock.json").read_text())["packages"]
        unhashed = [k for k, v in packages.items() if k and not v.get("link") and "integrity" not in v]
        assert not unhashed, f"{lock_dir.name}: entries without integrity hashes: {unhashed[:5]}"


def test_a_version_changed_by_hand_is_named(tmp_path: Path):
    """The comparison itself: a hand-edited pin, a missing and an unlocked package each give a line naming it."""
    locked = {"aiohttp": "3.12.0", "orjson": "3.10.0", "yarl": "1.20.0"}
    installed = {"aiohttp": "3.12.1", "yarl": "1.20.0", "leftpad": "1.0", "torch": "2.13.0+cpu", "pip": "25.3"}
    drift = locks.compare(".venv", locked, installed)
    assert drift.lines() == [".venv: aiohttp is 3.12.1, the lock says 3.12.0",
                             ".venv: orjson is locked but not installed",
                             ".venv: leftpad 1.0 is installed but not in the lock"]
    lock = tmp_path / "x.txt"
    lock.write_text("aiohttp==3.12.0 \\\n    --hash=sha256:00\n    # via x\nYarl_Thing==1.0 ; python_version >= '3'\n")
    assert locks.read_pip_lock(lock) == {"aiohttp": "3.12.0", "yarl-thing": "1.0"}


def test_npm_drift_names_the_package(tmp_path: Path):
    lock = tmp_path / "package-lock.json"
    lock.write_text(json.dumps({"packages": {
        "": {"name": "x"}, "node_modules/a": {"version": "1.0.0", "integrity": "sha512-x"},
        "node_modules/@s/b": {"version": "2.0.0", "integrity": "sha512-y"},
        "node_modules/c-linux-arm64": {"version": "1.0.0", "optional": True, "integrity": "sha512-z"}}}))
    for name, version in (("a", "1.0.1"), ("@s/b", "2.0.0")):
        (tmp_path / "node_modules" / name).mkdir(parents=True)
        (tmp_path / "node_modules" / name / "package.json").write_text(json.dumps({"version": version}))
    assert locks.npm_environment_drift("pi", tmp_path, lock).lines() == ["pi: a is 1.0.1, the lock says 1.0.0"]


def test_cuda_libraries_count_as_drift_unless_the_installed_torch_needs_them():
    """A CPU torch needs no nvidia-* libraries: stray ones are drift; a CUDA torch's own companions are not."""
    locked = {"aiohttp": "3.12.0"}
    cpu = {"aiohttp": "3.12.0", "torch": "2.13.0+cpu", "nvidia-cublas": "13.4", locks.TORCH_COMPANIONS_KEY: ""}
    assert locks.compare(".venv", locked, cpu).lines() == [".venv: nvidia-cublas 13.4 is installed but not in the lock"]
    cuda = {**cpu, "torch": "2.13.0", locks.TORCH_COMPANIONS_KEY: "nvidia-cublas triton"}
    assert not locks.compare(".venv", locked, cuda)
