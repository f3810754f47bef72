"""One package from sdist to validated SWE-bench rows (issue #24): fetch, environment image, baseline twice, mutants
screened (singles sampled over the operators with the manifest's seed, then combinations of 2-3 kept singles), one
task image per kept mutant, each validated through the container grader (gold 1.0, no change 0.0) and checked for
copies of the unmutated source. Every mutant tried is counted, kept or dropped with its reason."""

from __future__ import annotations

import ast
import fnmatch
import logging
import random
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollout_worker.environment.tasks.synth import images, mutate, rows, screen, sdist
from rollout_worker.environment.tasks.synth.manifest import PackageSpec, SynthInputError, SynthSettings
from rollout_worker.environment.tasks.synth.validate import grader, validate_row

logger = logging.getLogger(__name__)


@dataclass
class PackageReport:
    package: str
    version: str
    tests_kept: int = 0
    baseline_s: float = 0.0
    tried: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"package": self.package, "version": self.version, "tests_kept": self.tests_kept,
                "baseline_s": self.baseline_s, "mutants_tried": self.tried, "tasks": len(self.rows),
                "screen_kept": self.kept, "dropped": dict(sorted(self.dropped.items())),
                "seconds": round(self.seconds, 1)}


def source_files(spec: PackageSpec, tree: Path) -> list[str]:
    """The sdist's files that may be mutated: the manifest's globs, minus excludes and anything under a test path."""
    out = set()
    for pattern in spec.source:
        out.update(str(p.relative_to(tree)) for p in tree.glob(pattern) if p.is_file() and p.suffix == ".py")
    tests = tuple(t.rstrip("/") for t in spec.tests)
    out = {p for p in out if not any(fnmatch.fnmatch(p, e) for e in spec.exclude)
           and not any(p == t or p.startswith(t + "/") for t in tests) and "/tests/" not in f"/{p}"
           and not Path(p).name.startswith(("test_", "conftest"))}
    if not out:
        raise SynthInputError(f"{spec.name}: no source file matches {list(spec.source)}")
    return sorted(out)


@dataclass
class _Kept:
    mutations: list[mutate.Mutation]
    failing: set[str]
    messages: dict[str, str]


def _seed(settings: SynthSettings, spec: PackageSpec) -> int:
    return settings.seed * 1_000_003 + zlib.crc32(f"{spec.name}=={spec.version}".encode())


async def synth_package(client: Any, spec: PackageSpec, settings: SynthSettings, work: Path, *,
                        validate: bool = True, limit: int | None = None) -> PackageReport:
    """Synthesize `spec`'s tasks; `limit` caps the tasks kept (singles and combinations together)."""
    started = time.monotonic()
    report = PackageReport(spec.name, spec.version)
    pkg_work = work / spec.slug
    tree = sdist.fetch_sdist(spec, pkg_work)
    files = source_files(spec, tree)
    originals = {p: (tree / p).read_text(encoding="utf-8") for p in files}
    requirements = [settings.pytest, *spec.test_deps]
    env = images.build_env_image(client, spec, requirements, sdist.fetch_wheels(requirements, pkg_work / "wheels"),
                                 pkg_work)
    singles_per_package, combined_per_package, max_tried = spec.selection(settings)
    singles_cap = singles_per_package if limit is None else min(limit, singles_per_package)
    combined_cap = combined_per_package if limit is None else max(0, min(combined_per_package, limit - singles_cap))
    rng = random.Random(_seed(settings, spec))
    kept: list[_Kept] = []
    async with screen.SuiteRunner(client, env, spec, tree) as runner:
        first, second = await runner.run(), await runner.run()
        reliable = screen.reliable_set(first, second)
        report.tests_kept, report.baseline_s = len(reliable), max(first.seconds, second.seconds)
        if not reliable:
            raise SynthInputError(f"{spec.name}: no test passes reliably in its image "
                                  f"(exit {first.exit_code}, {len(first.status)} results)")
        timeout = max(30.0, 5 * report.baseline_s)
        pool = [m for p in files for m in mutate.candidates(p, originals[p], check=False)]
        dumps = {p: ast.dump(ast.parse(originals[p])) for p in files}
        singles = mutate.sample(pool, max_tried, rng,
                                ok=lambda m: mutate.changes_code(originals[m.path], dumps[m.path], m))
        same_failures: Counter = Counter()

        async def screen_one(group: list[mutate.Mutation]) -> None:
            report.tried += 1
            touched = sorted({m.path for m in group})
            mutated = {p: mutate.apply(originals[p], [m for m in group if m.path == p]) for p in touched}
            result = await runner.run_with({p: s.encode() for p, s in mutated.items()},
                                           {p: originals[p].encode() for p in touched}, timeout)
            failing = result.failing(reliable)
            if result.timed_out:
                report.dropped["test run timed out"] += 1
            elif not failing:
                report.dropped["no test fails (survived)"] += 1
            elif len(failing) > settings.max_fail_fraction * len(reliable):
                report.dropped["breaks more than max_fail_fraction of the suite"] += 1
            elif same_failures[frozenset(failing)] >= settings.max_same_failures:
                report.dropped["same failing tests as kept tasks"] += 1
            else:
                same_failures[frozenset(failing)] += 1
                kept.append(_Kept(group, failing, result.messages))
            logger.info("%s: mutant %d (%s) %s, %d failing, %.1f s", spec.name, report.tried,
                        "+".join(m.operator for m in group), "kept" if kept and kept[-1].mutations is group else
                        "dropped", len(failing), result.seconds)

        for m in singles:
            if len(kept) >= singles_cap:
                break
            await screen_one([m])
        singles_kept = [k.mutations[0] for k in kept]
        for group in mutate.combine(singles_kept, combined_cap, rng):
            await screen_one(group)
    report.kept = len(kept)
    await _emit(client, spec, settings, env, tree, originals, reliable, kept, report, pkg_work, validate)
    report.seconds = time.monotonic() - started
    return report


async def _emit(client: Any, spec: PackageSpec, settings: SynthSettings, env: str, tree: Path,
                originals: dict[str, str], reliable: set[str], kept: list[_Kept], report: PackageReport,
                work: Path, validate: bool) -> None:
    import shutil

    container_grader = grader(client)
    root = spec.import_root.strip("/").strip(".")
    relative = {p: p[len(root) + 1:] if root and p.startswith(root + "/") else p for p in originals}
    modules = sorted({Path(r).parts[0].removesuffix(".py") for r in relative.values()})
    for index, item in enumerate(kept):
        kind = "s" if len(item.mutations) == 1 else "c"
        instance_id = f"synth__{spec.slug}-{spec.version}-{kind}{index:03d}"
        touched = sorted({m.path for m in item.mutations})
        mutated = {p: mutate.apply(originals[p], [m for m in item.mutations if m.path == p]) for p in touched}
        copy = work / "mutated"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(tree, copy)
        for p, text in mutated.items():
            (copy / p).write_text(text, encoding="utf-8")
        tag, commit = images.build_task_image(client, env, copy, spec, instance_id, work)
        row = rows.make_row(spec, instance_id=instance_id, image=tag, base_commit=commit,
                            patch=rows.revert_patch(mutated, {p: originals[p] for p in touched}),
                            fail_to_pass=sorted(item.failing), pass_to_pass=sorted(reliable - item.failing),
                            messages=item.messages, test_cmd=screen.test_command(spec),
                            operators=[m.operator for m in item.mutations], seed=settings.seed)
        leaks = images.leak_check(client, tag, {relative[p]: originals[p].encode() for p in touched}, modules)
        if leaks:
            report.dropped["unmutated source found in the image"] += 1
            logger.warning("%s: %s", instance_id, leaks[:3])
            continue
        if validate:
            verdict = await validate_row(row, client, container_grader)
            if not verdict.ok:
                report.dropped[f"validation: {verdict.reason.split(' (')[0]}"] += 1
                logger.warning("%s dropped: %s", instance_id, verdict.reason)
                client.images.remove(tag, noprune=False)
                continue
        report.rows.append(row)
        logger.info("%s kept (%d failing)", instance_id, len(item.failing))
