"""File-tree and git helpers for task repositories: export a base, filter a tree, diff two trees, apply a patch.

Every git call here runs with a scrubbed environment (no system/global config, no hooks, repository discovery
stopped at the temp dir) and never inside an agent's repository: agent trees are only ever *read* as plain files.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import tarfile
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class GitError(RuntimeError):
    """A git step failed (bad base commit, a patch that does not apply, a timeout)."""


def git_env(ceiling: Path | None = None) -> dict[str, str]:
    """A minimal environment for git: no user/system config, no prompts, fixed locale, no secrets from the host."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }
    if ceiling is not None:
        env["GIT_CEILING_DIRECTORIES"] = str(ceiling)
    return env


def run_git(args: list[str], cwd: Path, timeout: float, stdin: bytes | None = None,
            ok_codes: tuple[int, ...] = (0,), what: str = "git", extra_env: dict[str, str] | None = None) -> bytes:
    """Run `git <args>` in `cwd`; returns stdout. Hooks and fsmonitor are forced off on the command line."""
    argv = ["git", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", *args]
    env = {**git_env(ceiling=Path(cwd).parent), **(extra_env or {})}
    stdin_kw = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=timeout, env=env, **stdin_kw)
    except subprocess.TimeoutExpired as e:
        raise GitError(f"{what}: git {args[0]} timed out after {timeout:g}s") from e
    if proc.returncode not in ok_codes:
        err = proc.stderr.decode("utf-8", "replace").strip()[-2000:]
        raise GitError(f"{what}: git {args[0]} failed (exit {proc.returncode}): {err}")
    return proc.stdout


@dataclass(frozen=True)
class TreeFilter:
    """Which paths of a repository are tests/test config (never taken from the agent) and which are junk.

    Patterns are shell globs matched against single path components.
    """

    test_dirs: tuple[str, ...] = field(
        default=("tests", "test", "testing"),
        metadata={"help": "Directory names whose whole subtree counts as tests."},
    )
    test_files: tuple[str, ...] = field(
        default=("test_*.py", "*_test.py", "tests.py", "conftest.py", "pytest.ini", ".pytest.ini", "tox.ini",
                 "setup.cfg"),
        metadata={"help": "File names that count as tests or test config. pyproject.toml is handled apart: only "
                  "a change to its [tool.pytest] table is dropped."},
    )
    runner_shadows: tuple[str, ...] = field(
        default=("pytest.py", "pytest", "_pytest", "py.py", "pluggy.py", "pluggy", "sitecustomize.py",
                 "usercustomize.py"),
        metadata={"help": "Names at the repository root that would shadow the test runner (`python -m pytest` puts "
                  "the working directory first on sys.path): never taken from the agent."},
    )
    junk: tuple[str, ...] = field(
        default=("[.][gG][iI][tT]", "__pycache__", "*.pyc", "*.pyo", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                 "*.egg-info", ".irl-junit-*.xml"),
        metadata={"help": "Path components ignored on both sides (VCS data — `.git` in any case, which git refuses "
                  "to apply —, caches, build metadata)."},
    )

    def is_junk(self, rel: str) -> bool:
        return any(fnmatch.fnmatchcase(part, pat) for part in rel.split("/") for pat in self.junk)

    def is_test(self, rel: str, is_dir: bool = False) -> bool:
        parts = rel.split("/")
        dirs = parts if is_dir else parts[:-1]
        if any(d in self.test_dirs for d in dirs):
            return True
        if any(fnmatch.fnmatchcase(parts[0], pat) for pat in self.runner_shadows):
            return True
        return not is_dir and any(fnmatch.fnmatchcase(parts[-1], pat) for pat in self.test_files)

    def keeps_source(self, rel: str, is_dir: bool = False) -> bool:
        """True for paths the grader takes from the agent: neither junk nor tests/test config."""
        return not self.is_junk(rel) and not self.is_test(rel, is_dir)


def copy_filtered_tree(src: Path, dst: Path, keep: Callable[[str, bool], bool]) -> list[str]:
    """Copy regular files and symlinks (as links, never followed) of `src` for which `keep(rel, is_dir)` holds.

    Returns the relative paths skipped because they are neither files, dirs nor links (FIFOs, sockets, devices) or
    could not be read. Modes are normalized to 0644/0755, the only ones git records.
    """
    skipped: list[str] = []
    dst.mkdir(parents=True, exist_ok=True)
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = sorted(os.scandir(src / rel_dir), key=lambda e: e.name)
        except OSError:
            skipped.append(rel_dir or ".")
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                if entry.is_symlink():
                    if keep(rel, False):
                        os.symlink(os.readlink(entry.path), dst / rel)
                elif entry.is_dir(follow_symlinks=False):
                    if keep(rel, True):
                        (dst / rel).mkdir()
                        stack.append(rel)
                elif entry.is_file(follow_symlinks=False):
                    if keep(rel, False):
                        shutil.copyfile(entry.path, dst / rel, follow_symlinks=False)
                        executable = entry.stat(follow_symlinks=False).st_mode & 0o111
                        os.chmod(dst / rel, 0o755 if executable else 0o644)
                elif keep(rel, False):
                    skipped.append(rel)  # never open a FIFO or device: reading one could block forever
            except OSError:
                skipped.append(rel)
    return skipped


def export_base_tree(repo_dir: Path, base_commit: str, dest: Path, timeout: float = 120.0) -> None:
    """Write the pristine tree of `repo_dir` at `base_commit` to `dest` (a new dir), without `.git`.

    A git checkout is read from its object store (`git archive`), so a dirty work tree cannot leak into the base;
    a plain directory is copied as is.
    """
    if not (repo_dir / ".git").exists():
        shutil.copytree(repo_dir, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        return
    with tempfile.TemporaryFile() as tar_file:
        tar_file.write(run_git(["archive", "--format=tar", base_commit or "HEAD"], repo_dir, timeout,
                               what="export base tree"))
        tar_file.seek(0)
        dest.mkdir(parents=True)
        with tarfile.open(fileobj=tar_file) as tar:
            tar.extractall(dest, filter="tar")


def git_diff_no_index(cwd: Path, before: str, after: str, timeout: float = 120.0) -> bytes:
    """Binary-safe diff from `cwd/before` to `cwd/after` with `-p1` paths (the dir names act as a/ and b/ prefixes).

    Renames come out as delete + add, so the patch applies without rename detection.
    """
    return run_git(
        ["diff", "--no-index", "--binary", "--no-renames", "--no-prefix", "--no-color", "--no-ext-diff",
         "--no-textconv", before, after],
        cwd, timeout, ok_codes=(0, 1), what="diff agent tree",
    )


def git_apply(repo: Path, patch: bytes | str, timeout: float = 120.0, what: str = "patch") -> None:
    """Apply a unified/binary git patch (paths `-p1`) to the plain directory `repo`; raises GitError if it fails."""
    data = patch.encode("utf-8", "surrogateescape") if isinstance(patch, str) else patch
    if not data.endswith(b"\n"):
        data += b"\n"
    run_git(["apply", "--binary", "--whitespace=nowarn", "-p1", "-"], repo, timeout, stdin=data,
            what=f"apply {what}")


def _pytest_table(path: Path) -> object:
    if not path.is_file():
        return None
    try:
        return tomllib.loads(path.read_text("utf-8")).get("tool", {}).get("pytest")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError):
        return "<unparseable>"


def restore_unchanged_test_config(before: Path, after: Path) -> list[str]:
    """Undo the agent's edits to `[tool.pytest]` in any pyproject.toml by putting the base file back in `after`.

    Other pyproject edits (dependencies, metadata) are kept. Returns the relative paths restored.
    """
    rels = {p.relative_to(root).as_posix() for root in (before, after) for p in root.rglob("pyproject.toml")}
    restored = []
    for rel in sorted(rels):
        if _pytest_table(before / rel) == _pytest_table(after / rel):
            continue
        restored.append(rel)
        (after / rel).unlink(missing_ok=True)
        if (before / rel).is_file():
            (after / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(before / rel, after / rel)
    return restored
