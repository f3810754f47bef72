"""The layer contracts (pyproject.toml [tool.importlinter]) hold, and no product module takes part in an import circle:
a wrong import is a red test, not a review comment. (That only `intercept_common.trl_api` imports TRL is
tests/trainer/test_trl_api.py, beside the pins on the names it exposes.)

The circle check alone: `.venv/bin/python -m pytest tests/test_architecture.py -q -k circle`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

import rollout_worker
from tests.paths import REPO

ROOT = REPO
PRODUCT_PACKAGES = ("control_plane", "rollout_worker", "trainer", "local_engine", "intercept_common", "doctor",
                    "space_app")


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


def import_circles(graph) -> list[list[str]]:
    """The strongly connected groups of two or more modules (Tarjan): each is a set of modules that import each other
    round a circle, `if TYPE_CHECKING:` imports included (they tie the modules' meaning together all the same)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:  # recursion depth is bounded by the longest import chain (a few dozen)
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return circles


def test_no_import_circle_among_product_modules():
    """Leaf modules stay leaves (e.g. `rollout_worker.outcomes` holds enums and imports nothing of ours, so the data
    in `rollout_worker.types` can use them without a circle back)."""
    graph = grimp.build_graph(*PRODUCT_PACKAGES, cache_dir=None)
    assert import_circles(graph) == []


def test_the_circle_check_finds_a_circle():
    graph = grimp.ImportGraph()
    for module in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(module)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.z", imported="a.x")
    assert import_circles(graph) == [["a.x", "a.y"]]
