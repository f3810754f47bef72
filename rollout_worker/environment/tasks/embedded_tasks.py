"""The embedded offline task set: small Python repositories with real bugs, shipped as plain files.

Each `embedded/<name>/` holds `repo/` (the source tree at the base commit, tests for the fix NOT included),
`gold.patch` (the fix), `test.patch` (tests that fail before the fix and pass after) and `task.json` (instance id,
problem statement, FAIL_TO_PASS / PASS_TO_PASS). They need only Python and pytest.

`materialize_embedded_repo` turns `repo/` into a git repository with exactly one commit (fixed author, committer,
dates and message, so `base_commit` is the same on every machine) and no remotes, reflogs, hooks or later history,
under a cache dir keyed by the content. Sandboxes must copy it, never mount it writable: it is the pristine base.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from intercept_common.errors import ConfigError
from rollout_worker.environment.tasks.trees import run_git

EMBEDDED_DIR = Path(__file__).parent / "embedded"
# Toy tasks whose reward a tiny random policy can move (the learning proof, the CPU demo); same layout.
LEARNING_DIR = Path(__file__).parent / "learning"
_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "intercept-rl",
    "GIT_AUTHOR_EMAIL": "tasks@intercept-rl.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+00:00",
    "GIT_COMMITTER_NAME": "intercept-rl",
    "GIT_COMMITTER_EMAIL": "tasks@intercept-rl.invalid",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+00:00",
}


def embedded_task_names(root: Path = EMBEDDED_DIR) -> list[str]:
    """Names of the embedded tasks (directory names), sorted."""
    return sorted(p.name for p in root.iterdir() if (p / "task.json").is_file())


def default_cache_dir() -> Path:
    """`$INTERCEPT_RL_CACHE_DIR`, else `$XDG_CACHE_HOME/intercept-rl`, else `~/.cache/intercept-rl`; + tasks/embedded."""
    root = os.environ.get("INTERCEPT_RL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "intercept-rl")
    return Path(root) / "tasks" / "embedded"


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _copy_source(src: Path, dst: Path) -> None:
    # Fixed modes: the commit hash depends on them, and a checkout's umask must not change it.
    for path in sorted(src.rglob("*")):
        if "__pycache__" in path.parts:
            continue
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(mode=0o755, exist_ok=True)
        else:
            shutil.copyfile(path, target)
            os.chmod(target, 0o644)


def materialize_embedded_repo(name: str, cache_dir: Path | None = None, timeout: float = 60.0,
                              root: Path = EMBEDDED_DIR) -> tuple[Path, str]:
    """Create (once) the single-commit git repo of embedded task `name`; returns (repo_dir, base_commit)."""
    source = root / name / "repo"
    if not source.is_dir():
        raise ConfigError(f"unknown embedded task {name!r}; known: {', '.join(embedded_task_names(root))}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{name}-{_tree_digest(source)}"
    if not (target / ".git").is_dir():
        # Build beside the target and rename into place: concurrent workers never see a half-built repo.
        build = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))
        try:
            _copy_source(source, build)
            run_git(["init", "-q", "-b", "main"], build, timeout, what="materialize")
            run_git(["add", "-A"], build, timeout, what="materialize")
            run_git(["commit", "-q", "--no-gpg-sign", "-m", f"Import {name}"], build, timeout,
                    what="materialize", extra_env=_GIT_IDENTITY)
            # Nothing the agent could mine: no reflogs, hook samples or commit-message leftovers.
            for leftover in ("logs", "hooks", "COMMIT_EDITMSG", "description"):
                path = build / ".git" / leftover
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            os.chmod(build, 0o755)
            try:
                os.rename(build, target)
            except OSError:
                if not (target / ".git").is_dir():
                    raise
        finally:
            shutil.rmtree(build, ignore_errors=True)
    head = run_git(["rev-parse", "HEAD"], target, timeout, what="materialize").decode().strip()
    return target, head


def embedded_rows(names: list[str] | None = None, cache_dir: Path | None = None,
                  root: Path = EMBEDDED_DIR) -> list[dict[str, Any]]:
    """The embedded tasks as SWE-Gym-schema rows (with `repo_dir` and `base_commit` filled in), materializing repos."""
    known = embedded_task_names(root)
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise ConfigError(f"unknown embedded task(s) {unknown}; known: {', '.join(known)}")
    rows = []
    for name in names or known:
        folder = root / name
        meta = json.loads((folder / "task.json").read_text("utf-8"))
        repo_dir, base_commit = materialize_embedded_repo(name, cache_dir, root=root)
        rows.append({
            **meta,
            "base_commit": base_commit,
            "repo_dir": str(repo_dir),
            "patch": (folder / "gold.patch").read_text("utf-8"),
            "test_patch": (folder / "test.patch").read_text("utf-8"),
            # Plain pytest, no third-party plugins: the tasks need none, and auto-loading them costs ~1 s a run.
            "test_command": [sys.executable, "-m", "pytest", "--disable-plugin-autoload"],
        })
    return rows
