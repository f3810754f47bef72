"""The layer contracts (pyproject.toml [tool.importlinter]) hold: a wrong import is a red test, not a review comment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import rollout_worker
from tests.paths import REPO

ROOT = REPO


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_the_package_face_exports_every_seam():
    """`rollout_worker` re-exports the Protocols an implementation plugs into, and the data they exchange."""
    for name in ("Engine", "EpisodeRunner", "Grader", "AgentLauncher", "SandboxBackend", "Sandbox", "SandboxProcess",
                 "TestExecutor", "Task", "EpisodeResult", "GradeResult", "RolloutEndpoint", "EpisodeStatus"):
        assert name in rollout_worker.__all__ and getattr(rollout_worker, name) is not None, name
