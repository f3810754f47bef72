"""The synthesis manifest (issue #24): which packages, at which versions, what of them is mutated and tested, and the
seed and selection numbers that make a task set reproducible. TOML, read with `tomllib`; every mistake is one
`SynthInputError` line naming the key, raised before anything is downloaded or built."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intercept_common.errors import UserError

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
SHIPPED_MANIFEST = SHIPPED_DIR / "manifest.toml"
SHIPPED_ROWS = SHIPPED_DIR / "tasks.jsonl"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VERSION = re.compile(r"^[0-9][A-Za-z0-9.+!-]*$")


class SynthInputError(UserError):
    """A manifest or a command line that synthesis cannot use (one line, before anything expensive)."""


@dataclass(frozen=True)
class PackageSpec:
    """One package of the manifest (`[[package]]`): which version, which files may be mutated, which tests judge."""

    name: str
    version: str
    source: tuple[str, ...]  # globs (relative to the unpacked sdist) of the files that may be mutated
    tests: tuple[str, ...]  # test paths given to pytest
    exclude: tuple[str, ...] = ()
    import_root: str = "."  # where the package imports from, relative to /testbed (`src` for src layouts)
    test_deps: tuple[str, ...] = ()  # pinned requirements installed from wheels into the image
    pytest_args: tuple[str, ...] = ()  # extra pytest arguments (e.g. `-o addopts=` where the config wants coverage)
    # This package's selection where it differs from `[synth]`: a slow suite gets fewer tasks, a fast one more.
    singles: int | None = None
    combined: int | None = None
    max_mutants_tried: int | None = None

    def selection(self, settings: SynthSettings) -> tuple[int, int, int]:
        """(singles kept, combinations kept, singles screened) at most: this package's own numbers, else `[synth]`'s."""
        return (settings.singles_per_package if self.singles is None else self.singles,
                settings.combined_per_package if self.combined is None else self.combined,
                settings.max_mutants_tried if self.max_mutants_tried is None else self.max_mutants_tried)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


@dataclass(frozen=True)
class SynthSettings:
    """The manifest's `[synth]` table: the seed, the pytest pin and the selection every package gets by default."""

    seed: int = 24
    pytest: str = "pytest==8.3.4"
    singles_per_package: int = 24
    combined_per_package: int = 6
    max_mutants_tried: int = 90
    max_fail_fraction: float = 0.5
    max_same_failures: int = 2


@dataclass(frozen=True)
class Manifest:
    """A parsed synthesis manifest: the settings and the packages, validated (`SynthInputError` otherwise)."""

    settings: SynthSettings
    packages: tuple[PackageSpec, ...] = field(default_factory=tuple)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise SynthInputError(f"{where}: expected a list of non-empty strings, got {value!r}")
    return tuple(value)


def package_from(data: dict[str, Any], where: str) -> PackageSpec:
    counts = ("singles", "combined", "max_mutants_tried")
    known = {"name", "version", "source", "tests", "exclude", "import_root", "test_deps", "pytest_args", *counts}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SynthInputError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    for key in ("name", "version", "source", "tests"):
        if key not in data:
            raise SynthInputError(f"{where}: missing {key!r}")
    name, version = data["name"], data["version"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise SynthInputError(f"{where}.name: {name!r} is not a package name")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise SynthInputError(f"{where}.version: {version!r} is not a pinned version (e.g. '1.0.0')")
    root = data.get("import_root", ".")
    if not isinstance(root, str) or root.startswith("/") or ".." in root.split("/"):
        raise SynthInputError(f"{where}.import_root: {root!r} must be a relative path inside the sdist")
    for key in counts:
        if key in data and (type(data[key]) is not int or data[key] < 0):
            raise SynthInputError(f"{where}.{key}: expected an integer >= 0, got {data[key]!r}")
    return PackageSpec(name=name, version=version, source=_strings(data["source"], f"{where}.source"),
                       tests=_strings(data["tests"], f"{where}.tests"),
                       exclude=_strings(data.get("exclude", []), f"{where}.exclude") if data.get("exclude") else (),
                       import_root=root,
                       test_deps=_strings(data["test_deps"], f"{where}.test_deps") if data.get("test_deps") else (),
                       pytest_args=_strings(data["pytest_args"], f"{where}.pytest_args")
                       if data.get("pytest_args") else (),
                       **{key: data[key] for key in counts if key in data})


def settings_from(data: dict[str, Any]) -> SynthSettings:
    defaults = SynthSettings()
    values: dict[str, Any] = {}
    for key, value in data.items():
        if not hasattr(defaults, key):
            raise SynthInputError(f"[synth]: unknown key {key!r}")
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int):
            value = float(value)
        if type(value) is not expected:
            raise SynthInputError(f"[synth].{key}: expected {expected.__name__}, got {value!r}")
        if expected in (int, float) and value < 0:
            raise SynthInputError(f"[synth].{key}: must be >= 0, got {value!r}")
        values[key] = value
    return SynthSettings(**values)


def load_manifest(path: Path) -> Manifest:
    if not path.is_file():
        raise SynthInputError(f"manifest {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SynthInputError(f"manifest {path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"synth", "package"})
    if unknown:
        raise SynthInputError(f"manifest {path}: unknown section {unknown[0]!r} (known: synth, package)")
    packages = data.get("package", [])
    if not isinstance(packages, list) or not packages:
        raise SynthInputError(f"manifest {path}: no [[package]] entries")
    specs = tuple(package_from(p, f"package[{i}]") for i, p in enumerate(packages))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SynthInputError(f"manifest {path}: a package is listed twice")
    return Manifest(settings=settings_from(data.get("synth", {})), packages=specs)
