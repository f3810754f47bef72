"""Getting a package's source distribution and its test dependencies' wheels from the package index, with pip
itself (`pip download`; the index is the one pip is configured for). Every call has a timeout."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from rollout_worker.environment.tasks.synth.manifest import PackageSpec, SynthInputError

PIP_TIMEOUT_S = 600.0


def _pip(args: list[str], what: str) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input", "-q", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SynthInputError(f"pip download of {what} did not finish in {PIP_TIMEOUT_S:g}s") from None
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
        raise SynthInputError(f"pip download of {what} failed: {tail[-300:]}")


def fetch_sdist(spec: PackageSpec, dest: Path) -> Path:
    """The unpacked sdist of `spec` (its top directory) under `dest`."""
    archives = dest / "sdist"
    archives.mkdir(parents=True, exist_ok=True)
    _pip(["--no-binary", ":all:", "--no-deps", "-d", str(archives), f"{spec.name}=={spec.version}"],
         f"the sdist of {spec.name}=={spec.version}")
    found = [p for p in archives.iterdir() if p.name.endswith((".tar.gz", ".zip", ".tar.bz2"))]
    if len(found) != 1:
        raise SynthInputError(f"expected one sdist of {spec.name}=={spec.version}, found {[p.name for p in found]}")
    out = dest / "src"
    out.mkdir(exist_ok=True)
    if found[0].name.endswith(".zip"):
        with zipfile.ZipFile(found[0]) as z:
            z.extractall(out)
    else:
        with tarfile.open(found[0]) as t:
            t.extractall(out, filter="data")
    tops = [p for p in out.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise SynthInputError(f"the sdist of {spec.name} does not unpack to one directory")
    return tops[0]


def fetch_wheels(requirements: list[str], dest: Path, python_version: str = "3.11") -> Path:
    """Wheels (only) of `requirements` and their dependencies, for the image's Python, plus pip's own wheel."""
    dest.mkdir(parents=True, exist_ok=True)
    target = ["--only-binary", ":all:", "--python-version", python_version, "--implementation", "cp",
              "--platform", "manylinux2014_x86_64", "-d", str(dest)]
    _pip([*target, *requirements], ", ".join(requirements))
    _pip([*target, "--no-deps", "pip"], "pip")
    return dest
