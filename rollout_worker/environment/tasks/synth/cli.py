"""`intercept-rl tasks synth`: synthesize validated SWE-bench-format tasks from real Python packages (issue #24).

    intercept-rl tasks synth --manifest rollout_worker/environment/tasks/synth/shipped/manifest.toml --out DIR
    intercept-rl tasks synth --package toolz==1.0.0 --source 'toolz/*.py' --tests toolz/tests --out DIR --limit 5

Writes DIR/tasks.jsonl (rows in SWE-bench's schema, each with its `image`, `test_cmd` and `synth` provenance) and
DIR/report.json (per package: tests kept, mutants tried, tasks, drops per reason, seconds). The rows are rewritten
after each package, so a build stopped midway keeps what validated. Task images are built locally
(`intercept-rl-synth/<package>:<task>`) and cached; `--sandbox docker --tasks DIR/tasks.jsonl` runs agents on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from rollout_worker.environment.tasks.synth.manifest import (
    SHIPPED_MANIFEST,
    Manifest,
    SynthInputError,
    SynthSettings,
    load_manifest,
    package_from,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise SynthInputError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="intercept-rl tasks synth", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, help=f"a synthesis manifest (default: the shipped one, {SHIPPED_MANIFEST})")
    p.add_argument("--package", help="one package instead of a manifest: NAME==VERSION (with --source, --tests)")
    p.add_argument("--source", action="append", default=[], help="glob of files to mutate (repeatable)")
    p.add_argument("--tests", action="append", default=[], help="test path given to pytest (repeatable)")
    p.add_argument("--import-root", default=".", help="where the package imports from (`src` for src layouts)")
    p.add_argument("--test-dep", action="append", default=[], help="pinned test dependency (repeatable)")
    p.add_argument("--pytest-arg", action="append", default=[], help="extra pytest argument (repeatable; e.g. "
                   "--pytest-arg=-o --pytest-arg=addopts= where the package's config wants plugins)")
    p.add_argument("--only", default="", help="comma-separated package names of the manifest to build")
    p.add_argument("--out", type=Path, required=True, help="output directory (tasks.jsonl, report.json)")
    p.add_argument("--limit", type=int, help="tasks kept per package at most (overrides the manifest's numbers)")
    p.add_argument("--seed", type=int, help="mutation seed (default: the manifest's)")
    p.add_argument("--no-validate", action="store_true", help="skip the gold/no-change validation (not for sets "
                   "you ship)")
    p.add_argument("--images-only", action="store_true", help="only build the images that DIR/tasks.jsonl names "
                   "and that are missing (from the sdists and the rows' patches; no screening, no validation)")
    p.add_argument("--quiet", action="store_true")
    return p


def _manifest(args: argparse.Namespace) -> Manifest:
    if args.package:
        if args.manifest:
            raise SynthInputError("give --manifest or --package, not both")
        if "==" not in args.package:
            raise SynthInputError(f"--package {args.package!r}: expected NAME==VERSION")
        if not args.source or not args.tests:
            raise SynthInputError("--package needs --source and --tests")
        name, version = args.package.split("==", 1)
        spec = package_from({"name": name, "version": version, "source": args.source, "tests": args.tests,
                             "import_root": args.import_root, "test_deps": args.test_dep,
                             "pytest_args": args.pytest_arg}, "--package")
        return Manifest(SynthSettings(), (spec,))
    manifest = load_manifest(args.manifest or SHIPPED_MANIFEST)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in {p.name for p in manifest.packages}]
        if unknown:
            raise SynthInputError(f"--only: {unknown[0]!r} is not in the manifest")
        manifest = Manifest(manifest.settings, tuple(p for p in manifest.packages if p.name in wanted))
    return manifest


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: intercept-rl tasks synth --out DIR [--manifest M | --package NAME==VERSION ...]\n\n"
              "`intercept-rl tasks synth --help` lists the options.")
        return 0
    if argv[0] == "table" and len(argv) == 2:  # the docs' per-package table of a built set
        from rollout_worker.environment.tasks.synth.table import markdown

        if not (Path(argv[1]) / "tasks.jsonl").is_file():
            raise SynthInputError(f"{argv[1]!r} holds no tasks.jsonl")
        print(markdown(Path(argv[1])), end="")
        return 0
    if argv[0] != "synth":
        raise SynthInputError(f"unknown tasks command {argv[0]!r} (known: synth, table DIR)")
    args = _parser().parse_args(argv[1:])
    manifest = _manifest(args)
    if args.limit is not None and args.limit < 1:
        raise SynthInputError(f"--limit must be >= 1, got {args.limit}")
    settings = manifest.settings if args.seed is None else replace(manifest.settings, seed=args.seed)
    if args.out.exists() and not args.out.is_dir():
        raise SynthInputError(f"--out {str(args.out)!r} exists and is not a directory")
    args.out.mkdir(parents=True, exist_ok=True)
    from rollout_worker.environment.sandbox.docker.client import docker_client

    client = docker_client(600)  # one line when there is no engine, before any download
    from rollout_worker.environment.sandbox.docker.backend import reap_docker_orphans

    reap_docker_orphans(client)  # containers a killed earlier build left behind

    def stop(signum, frame):  # SIGTERM unwinds like Ctrl-C: every container this build started is removed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
    if args.images_only:
        return _images_only(client, manifest, args.out)
    return asyncio.run(_build(client, manifest, settings, args))


def _images_only(client, manifest: Manifest, out: Path) -> int:
    from rollout_worker.environment.tasks.synth.rebuild import build_missing_images

    if not (out / "tasks.jsonl").is_file():
        raise SynthInputError(f"--images-only: {out / 'tasks.jsonl'} does not exist")
    rows = [json.loads(line) for line in (out / "tasks.jsonl").read_text().splitlines() if line.strip()]
    work = Path(tempfile.mkdtemp(prefix="irl-synth-images-"))
    try:
        counts = build_missing_images(client, manifest, rows, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(counts))
    return 0 if counts["failed"] == 0 else 1


async def _build(client, manifest: Manifest, settings: SynthSettings, args: argparse.Namespace) -> int:
    rows_path, report_path = args.out / "tasks.jsonl", args.out / "report.json"
    rows: dict[str, dict] = {}
    reports: dict[str, dict] = {}
    if rows_path.exists():  # resume: packages already built keep their rows
        for line in rows_path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["instance_id"]] = row
    if report_path.exists():
        reports = {r["package"]: r for r in json.loads(report_path.read_text()).get("packages", [])}
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="irl-synth-"))
    try:
        await _packages(client, manifest, settings, args, work, rows, reports, started)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{len(rows)} tasks in {rows_path} ({time.monotonic() - started:.0f} s)")
    return 0


async def _packages(client, manifest, settings, args, work, rows, reports, started) -> None:
    from rollout_worker.environment.tasks.synth.pipeline import synth_package

    rows_path, report_path = args.out / "tasks.jsonl", args.out / "report.json"
    for spec in manifest.packages:
        try:
            report = await synth_package(client, spec, settings, work, validate=not args.no_validate,
                                         limit=args.limit)
        except SynthInputError as exc:
            print(f"intercept-rl tasks synth: {spec.name}: {exc}", file=sys.stderr)
            reports[spec.name] = {"package": spec.name, "version": spec.version, "error": str(exc)}
            continue
        for key in [k for k, v in rows.items() if v.get("synth", {}).get("package") == spec.name]:
            del rows[key]  # in place: the caller counts the rows
        rows.update({r["instance_id"]: r for r in report.rows})
        reports[spec.name] = report.as_json()
        rows_path.write_text("".join(json.dumps(rows[k], sort_keys=True) + "\n" for k in sorted(rows)))
        report_path.write_text(json.dumps({"seed": settings.seed, "packages": list(reports.values()),
                                           "last_run_s": round(time.monotonic() - started, 1)}, indent=1) + "\n")
        if not args.quiet:
            print(json.dumps(report.as_json()), flush=True)
