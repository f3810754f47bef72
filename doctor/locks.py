"""Compare what an environment has installed with the lock it was installed from.

Every environment the project creates installs from a committed lock (scripts/bootstrap.sh; `make lock` writes
them). Drift — a package at another version than its lock, missing, or installed without being locked — is a
reproducibility bug that shows up later as a behaviour change; this module turns it into one clear line naming the
package. Used by `tests/test_locks.py` and `intercept-rl doctor`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOCKS = PROJECT_ROOT / "locks"

# Installed next to a locked set without being in it, on purpose: torch is installed per machine (the CPU wheel, or
# the GPU box's CUDA build with its nvidia-*/triton companions: see scripts/lock.sh), pip is pinned by bootstrap.sh,
# and the project itself is installed editable from the checkout. What the installed torch requires (recursively)
# and the lock lacks is allowed too; on a CPU machine that is nothing, so stray CUDA libraries count as drift.
UNLOCKED_ON_PURPOSE = frozenset({"torch", "pip", "intercept-rl"})
TORCH_COMPANIONS_KEY = "__torch_requires__"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalize(name: str) -> str:
    """PEP 503 name normalization (`Foo_Bar.baz` and `foo-bar-baz` are one project)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pip_lock(path: Path) -> dict[str, str]:
    """`name==version` pins of a pip-compile lock (hash and comment lines skipped), keyed by normalized name."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[normalize(match.group(1))] = match.group(2)
    if not pins:
        raise ValueError(f"{path} holds no `name==version` pins")
    return pins


def installed_in(python: Path) -> dict[str, str]:
    """Every distribution installed in the environment of interpreter `python` (normalized name -> version).

    Under `TORCH_COMPANIONS_KEY` (space-separated) it also lists what the installed torch requires, recursively.
    """
    code = r"""
import json, re, importlib.metadata as m
have = {}
for d in m.distributions():  # in sys.path order: the first copy of a name is the one Python imports
    if d.metadata['Name'] and d.metadata['Name'] not in have:
        have[d.metadata['Name']] = d.version
def deps(name):
    try:
        reqs = m.requires(name) or []
    except m.PackageNotFoundError:
        return []
    return [re.split(r'[ ;<>=!~\[(]', r, maxsplit=1)[0] for r in reqs if 'extra ==' not in r]
seen, todo = set(), deps('torch') if 'torch' in have else []
while todo:
    name = todo.pop()
    if name.lower() not in seen:
        seen.add(name.lower()); todo.extend(deps(name))
have['__torch_requires__'] = ' '.join(sorted(seen))
print(json.dumps(have))
"""
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{python} could not list its packages: {proc.stderr.strip()[-300:]}")
    return {(k if k == TORCH_COMPANIONS_KEY else normalize(k)): v for k, v in json.loads(proc.stdout).items()}


@dataclass
class Drift:
    """How an installed environment differs from its lock; empty when it matches exactly."""

    environment: str
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (locked, installed)
    missing: list[str] = field(default_factory=list)
    unlocked: dict[str, str] = field(default_factory=dict)  # name -> installed version

    def __bool__(self) -> bool:
        return bool(self.changed or self.missing or self.unlocked)

    def lines(self) -> list[str]:
        out = [f"{self.environment}: {name} is {have}, the lock says {want}"
               for name, (want, have) in sorted(self.changed.items())]
        out += [f"{self.environment}: {name} is locked but not installed" for name in self.missing]
        out += [f"{self.environment}: {name} {version} is installed but not in the lock"
                for name, version in sorted(self.unlocked.items())]
        return out


def compare(environment: str, locked: dict[str, str], installed: dict[str, str]) -> Drift:
    drift = Drift(environment)
    installed = dict(installed)
    companions = {normalize(n) for n in installed.pop(TORCH_COMPANIONS_KEY, "").split()}
    for name, want in locked.items():
        have = installed.get(name)
        if have is None:
            drift.missing.append(name)
        elif have != want:
            drift.changed[name] = (want, have)
    for name, have in installed.items():
        if name not in locked and name not in UNLOCKED_ON_PURPOSE and name not in companions:
            drift.unlocked[name] = have
    return drift


def pip_environment_drift(environment: str, python: Path, lock: Path) -> Drift:
    return compare(environment, read_pip_lock(lock), installed_in(python))


def npm_environment_drift(environment: str, prefix: Path, lock: Path) -> Drift:
    """Compare `<prefix>/node_modules/*/package.json` with the `packages` of an npm `package-lock.json`.

    Optional packages for other platforms (esbuild-style per-OS binaries) are legitimately absent.
    """
    packages = json.loads(lock.read_text()).get("packages", {})
    drift = Drift(environment)
    for key, entry in packages.items():
        if not key.startswith("node_modules/") or entry.get("link"):
            continue
        manifest = prefix / key / "package.json"
        if not manifest.is_file():
            if not entry.get("optional"):
                drift.missing.append(key.removeprefix("node_modules/"))
            continue
        have = json.loads(manifest.read_text()).get("version")
        if have != entry.get("version"):
            drift.changed[key.removeprefix("node_modules/")] = (entry.get("version"), have)
    return drift


def main(argv: list[str]) -> int:
    """`python -m doctor.locks unlocked PYTHON LOCK`: print what PYTHON's environment has beyond LOCK, one a line.

    scripts/bootstrap.sh removes those so an environment holds exactly its lock (e.g. the setuptools that `venv`
    seeds on Python 3.11, or a package left from an older lock). Stdlib only: it runs before any venv exists.
    """
    if len(argv) != 4 or argv[1] != "unlocked":
        print("usage: python -m doctor.locks unlocked PYTHON LOCK", file=sys.stderr)
        return 2
    drift = compare("", read_pip_lock(Path(argv[3])), installed_in(Path(argv[2])))
    for name in sorted(drift.unlocked):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
