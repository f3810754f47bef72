"""SWE-bench / SWE-Gym grading semantics, without the `swebench` package (pure Python, no Docker here).

Why not the package: `swebench` 5.0.2 imports docker, datasets, modal, unidiff, typer, python-dotenv and tenacity at
`swebench.harness` import time (454 MB in a fresh venv, measured 2026-11-30), and pins would have to coexist with
TRL's. What grading needs from it is small and stable, so this module re-implements it, written from the harness's
documented behaviour (swebench 5.0.2, `harness/grading.py`, `harness/log_parsers/python.py`, `harness/constants`):

- the eval log's markers (`>>>>> Start Test Output`, `>>>>> End Test Output`, `>>>>> Test Exit Code: N`, and the
  failure markers `>>>>> Patch Apply Failed`, `>>>>> Reset Failed`, `>>>>> Tests Errored`, `>>>>> Tests Timed Out`);
- the per-repository log parsers (pytest `-rA` summary lines, with and without option rewriting, and Django's
  runner), turning the log between the markers into {test id: PASSED | FAILED | SKIPPED | ERROR | XFAIL};
- the report: a FAIL_TO_PASS test succeeds when PASSED or XFAIL (a truncated parametrized id may prefix-match when
  all candidates agree), fails when missing, FAILED, ERROR or SKIPPED; a PASS_TO_PASS test is also maintained when
  SKIPPED; resolved (FULL) iff every FAIL_TO_PASS and PASS_TO_PASS test succeeds.

tests/worker/environment/test_docker_swebench.py checks these functions on logs in the harness's format against verdicts that were
produced by swebench 5.0.2 itself (and against the package directly when it is importable).

Deliberate differences, both about what the harness cannot tell apart: a log whose markers are missing, whose test
patch did not apply or whose run timed out is an infrastructure failure here (unscorable), where the harness reports
"not resolved"; and the agent's changes to test files are dropped before its diff is applied (the harness resets
only the files the test patch touches).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

START_TEST_OUTPUT = ">>>>> Start Test Output"
END_TEST_OUTPUT = ">>>>> End Test Output"
TEST_EXIT_CODE = ">>>>> Test Exit Code"
APPLY_PATCH_FAIL = ">>>>> Patch Apply Failed"
APPLY_PATCH_PASS = ">>>>> Applied Patch"
RESET_FAILED = ">>>>> Reset Failed"
TESTS_ERROR = ">>>>> Tests Errored"
TESTS_TIMEOUT = ">>>>> Tests Timed Out"
# Ours (not the harness's): the task's own test patch did not apply, so the run says nothing about the agent.
TEST_PATCH_FAIL = ">>>>> Test Patch Apply Failed"
STATUSES = ("FAILED", "PASSED", "SKIPPED", "ERROR", "XFAIL")
PASSING = ("PASSED", "XFAIL")

# The harness's patch application, in its order: the first command that succeeds wins.
GIT_APPLY_CMDS = ["git apply --verbose", "git apply --verbose --3way", "git apply --verbose --reject",
                  "patch --batch --forward --fuzz=5 -p1 -i"]

# Image names. SWE-bench's official images: `swebench/sweb.eval.x86_64.<id with __ → _1776_>:latest`;
# SWE-Gym's: `xingyaoww/sweb.eval.x86_64.<id with __ → _s_>`.
SWE_BENCH_IMAGE_TEMPLATE = "swebench/sweb.eval.x86_64.{swebench_id}:latest"
SWE_GYM_IMAGE_TEMPLATE = "xingyaoww/sweb.eval.x86_64.{docker_id}"


def image_name(instance_id: str, flavor: str = "swe-bench") -> str:
    """The evaluation image of an instance: `flavor` is `swe-bench` or `swe-gym` (`schema.docker_image_for`)."""
    from rollout_worker.environment.tasks.schema import docker_image_for

    templates = {"swe-bench": SWE_BENCH_IMAGE_TEMPLATE, "swe-gym": SWE_GYM_IMAGE_TEMPLATE}
    if flavor not in templates:
        raise ValueError(f"unknown image flavor {flavor!r}: expected 'swe-bench' or 'swe-gym'")
    return docker_image_for(instance_id, "", templates[flavor])


# -- log parsers ----------------------------------------------------------------------------------------------------
_SKIP_COUNT = re.compile(r"^\[\d+\]$")


def _pytest_lines(log: str):
    for line in log.split("\n"):
        status = next((s for s in STATUSES if line.startswith(s)), None)
        if status is None:
            continue
        if status == "FAILED":
            line = line.replace(" - ", " ")
        words = line.split()
        if len(words) <= 1:
            continue
        if words[0] == "SKIPPED" and _SKIP_COUNT.match(words[1]):  # `SKIPPED [2] file:line: reason`
            continue
        yield words[0], words[1]


def parse_pytest(log: str) -> dict[str, str]:
    """pytest `-rA` short summary lines: `PASSED tests/x.py::test_a`, `FAILED tests/x.py::test_b - msg`, …"""
    return {name: status for status, name in _pytest_lines(log)}


_OPTION = re.compile(r"(.*?)\[(.*)\]")


def parse_pytest_options(log: str) -> dict[str, str]:
    """As `parse_pytest`, but a parametrization that is an absolute path keeps only its last component."""
    out = {}
    for status, name in _pytest_lines(log):
        match = _OPTION.search(name)
        if match:
            main, option = match.groups()
            if option.startswith("/") and not option.startswith("//") and "*" not in option:
                option = "/" + option.split("/")[-1]
            name = f"{main}[{option}]"
        out[name] = status
    return out


def parse_django(log: str) -> dict[str, str]:
    """Django's runner at verbosity 2: `test_x (app.tests.T) ... ok|skipped|FAIL|ERROR`, `FAIL: …` headers."""
    out: dict[str, str] = {}
    previous = None
    for raw in log.split("\n"):
        line = raw.strip()
        if "--version is equivalent to version" in line:
            out["--version is equivalent to version"] = "PASSED"
        if " ... " in line:
            previous = line.split(" ... ")[0]
        for suffix in (" ... ok", " ... OK", " ...  OK"):
            if line.endswith(suffix):
                out[line.rsplit(suffix, 1)[0]] = "PASSED"
                break
        if " ... skipped" in line:
            out[line.split(" ... skipped")[0]] = "SKIPPED"
        if line.endswith(" ... FAIL"):
            out[line.split(" ... FAIL")[0]] = "FAILED"
        if line.startswith("FAIL:") and len(line.split()) > 1:
            out[line.split()[1].strip()] = "FAILED"
        if line.endswith(" ... ERROR"):
            out[line.split(" ... ERROR")[0]] = "ERROR"
        if line.startswith("ERROR:") and len(line.split()) > 1:
            out[line.split()[1].strip()] = "ERROR"
        if line.lstrip().startswith("ok") and previous is not None:
            out[previous] = "PASSED"  # the test printed between its `...` and its `ok`
    return out


LOG_PARSERS: dict[str, Callable[[str], dict[str, str]]] = {
    "pytest": parse_pytest, "pytest_options": parse_pytest_options, "django": parse_django,
}
# The harness's registry names (a row's `log_parser` may use either form).
HARNESS_PARSER_NAMES = {f"parse_log_{name}": name for name in LOG_PARSERS}
# Which parser each repository's instances use; the row's `log_parser` wins. Repositories whose harness parser is a
# dedicated one not re-implemented here (sympy, matplotlib, seaborn, sphinx, astropy, xarray, …) must name a parser
# explicitly or are refused (unscorable) rather than graded with the wrong one.
REPO_PARSER = {"django/django": "django"}
DEDICATED_PARSER_REPOS = {"sympy/sympy", "matplotlib/matplotlib", "mwaskom/seaborn", "sphinx-doc/sphinx",
                          "astropy/astropy", "pydata/xarray", "scikit-learn/scikit-learn", "pylint-dev/pylint",
                          "pylint-dev/astroid", "pallets/flask", "psf/requests", "pyvista/pyvista",
                          "sqlfluff/sqlfluff", "marshmallow-code/marshmallow", "pvlib/pvlib-python",
                          "pydicom/pydicom"}


def parser_for(repo: str, requested: str | None = None) -> str:
    """The log parser name for a repository (see `REPO_PARSER`); raises ValueError when none fits."""
    if requested:
        name = HARNESS_PARSER_NAMES.get(requested, requested)
        if name not in LOG_PARSERS:
            raise ValueError(f"log parser {requested!r} is not implemented (known: {', '.join(LOG_PARSERS)})")
        return name
    if repo in DEDICATED_PARSER_REPOS:
        raise ValueError(f"{repo} uses a dedicated harness log parser; name one of {', '.join(LOG_PARSERS)} in the "
                         "row's `log_parser` if its log is pytest-shaped")
    return REPO_PARSER.get(repo, "pytest")


TEST_PYTEST = "pytest --no-header -rA --tb=no -p no:cacheprovider"
REPO_TEST_CMD = {"django/django": "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1"}


# -- the eval log → status map → report -----------------------------------------------------------------------------
@dataclass
class LogVerdict:
    """What an eval log says. `found` False: the harness would report no results (not resolved)."""

    status_map: dict[str, str]
    found: bool
    failure: str | None = None  # which failure marker / check made `found` False
    infra: bool = False  # the failure is ours (markers missing, test patch, timeout), not the agent's
    exit_code: int | None = None


# Evidence that a runner executed when nothing was parsed (the Python runners' part of the harness's check).
_SUITE_RAN = re.compile(r"Executed [1-9]\d* of \d+|[1-9]\d* passing|Tests:\s+[1-9]\d*|^# tests [1-9]\d*", re.M)
_EXIT_CODE = re.compile(rf"{re.escape(TEST_EXIT_CODE)}:\s*(-?\d+)")


def read_log(log: str, parser: str = "pytest") -> LogVerdict:
    """Turn an eval log into per-test outcomes the way the harness's `get_logs_eval` does."""
    parse = LOG_PARSERS[parser]
    match = _EXIT_CODE.search(log)
    exit_code = int(match.group(1)) if match else None
    if TEST_PATCH_FAIL in log:
        return LogVerdict({}, False, "test patch did not apply", infra=True, exit_code=exit_code)
    if TESTS_TIMEOUT in log:
        return LogVerdict({}, False, "tests timed out", infra=True, exit_code=exit_code)
    for marker, why in ((APPLY_PATCH_FAIL, "agent patch did not apply"), (RESET_FAILED, "reset failed"),
                        (TESTS_ERROR, "tests errored")):
        if marker in log:
            return LogVerdict({}, False, why, infra=marker == RESET_FAILED, exit_code=exit_code)
    if START_TEST_OUTPUT not in log or END_TEST_OUTPUT not in log:
        return LogVerdict({}, False, "test output markers missing", infra=True, exit_code=exit_code)
    sliced = log.split(START_TEST_OUTPUT)[1].split(END_TEST_OUTPUT)[0]
    status_map = parse(sliced) or parse(log)
    if not status_map and not _SUITE_RAN.search(log):
        return LogVerdict({}, False, "no test results in the log", exit_code=exit_code)
    if exit_code not in (None, 0) and status_map and not any(s in ("FAILED", "ERROR") for s in status_map.values()):
        # Non-zero exit while reporting no failure: the log does not describe the run (e.g. forged PASSED lines).
        return LogVerdict({}, False, f"test command exited {exit_code} but no test failed", exit_code=exit_code)
    return LogVerdict(status_map, True, exit_code=exit_code)


def _resolve(case: str, sm: dict[str, str]) -> str | None:
    if case in sm:
        return case
    if case.count("[") > case.count("]"):  # a truncated parametrized id: prefix match if the candidates agree
        matches = [k for k in sm if k.startswith(case)]
        if matches and len({sm[k] in PASSING for k in matches}) == 1:
            return matches[0]
    return None


def test_passed(case: str, sm: dict[str, str]) -> bool:
    key = _resolve(case, sm)
    return key is not None and sm[key] in PASSING


def test_failed(case: str, sm: dict[str, str]) -> bool:
    key = _resolve(case, sm)
    return key is None or sm[key] in ("FAILED", "ERROR", "SKIPPED")


def test_maintained(case: str, sm: dict[str, str]) -> bool:
    key = _resolve(case, sm)
    return test_passed(case, sm) or (key is not None and sm[key] == "SKIPPED")


test_passed.__test__ = test_failed.__test__ = test_maintained.__test__ = False  # type: ignore[attr-defined]


@dataclass
class Report:
    """FAIL_TO_PASS / PASS_TO_PASS successes and failures, and the resolution ("FULL", "PARTIAL", "NO")."""

    f2p_success: list[str] = field(default_factory=list)
    f2p_failure: list[str] = field(default_factory=list)
    p2p_success: list[str] = field(default_factory=list)
    p2p_failure: list[str] = field(default_factory=list)

    @property
    def resolution(self) -> str:
        f2p_total = len(self.f2p_success) + len(self.f2p_failure)
        p2p_total = len(self.p2p_success) + len(self.p2p_failure)
        f2p = len(self.f2p_success) / f2p_total if f2p_total else 1
        p2p = len(self.p2p_success) / p2p_total if p2p_total else 1
        if f2p == 1 and p2p == 1:
            return "FULL"
        return "PARTIAL" if 0 < f2p < 1 and p2p == 1 else "NO"

    @property
    def resolved(self) -> bool:
        return self.resolution == "FULL"

    def fraction(self) -> float:
        total = len(self.f2p_success) + len(self.f2p_failure) + len(self.p2p_success) + len(self.p2p_failure)
        return (len(self.f2p_success) + len(self.p2p_success)) / total if total else 0.0


def eval_report(status_map: dict[str, str], fail_to_pass: list[str], pass_to_pass: list[str]) -> Report:
    """The harness's `get_eval_tests_report` (PASS_AND_FAIL evaluation) for one instance."""
    report = Report()
    for case in fail_to_pass:
        if test_passed(case, status_map):
            report.f2p_success.append(case)
        elif test_failed(case, status_map):
            report.f2p_failure.append(case)
    for case in pass_to_pass:
        if test_maintained(case, status_map):
            report.p2p_success.append(case)
        elif test_failed(case, status_map):
            report.p2p_failure.append(case)
    return report


def resolved_from_log(log: str, fail_to_pass: list[str], pass_to_pass: list[str],
                      parser: str = "pytest") -> tuple[bool, LogVerdict, Report | None]:
    """The official verdict for one eval log: (resolved, what the log said, the report when there were results)."""
    verdict = read_log(log, parser)
    if not verdict.found:
        return False, verdict, None
    report = eval_report(verdict.status_map, fail_to_pass, pass_to_pass)
    return report.resolved, verdict, report


# -- the eval script ------------------------------------------------------------------------------------------------
_DIFF_FILE = re.compile(r"^diff --git a/(\S+) b/(\S+)", re.M)


def test_patch_files(test_patch: str) -> list[str]:
    """Files the test patch touches (the harness's test directives for pytest repositories)."""
    return list(dict.fromkeys(m.group(2) for m in _DIFF_FILE.finditer(test_patch)))


test_patch_files.__test__ = False  # type: ignore[attr-defined]


def test_directives(repo: str, test_patch: str) -> list[str]:
    """What the test command is given: the test patch's files (Django: as dotted test modules under tests/)."""
    files = [f for f in test_patch_files(test_patch) if f.endswith(".py") or repo != "django/django"]
    if repo == "django/django":
        return [f.removeprefix("tests/").removesuffix(".py").replace("/", ".") for f in files]
    return files


test_directives.__test__ = False  # type: ignore[attr-defined]


def eval_script(*, workdir: str, base_commit: str, test_cmd: str, directives: list[str], test_files: list[str],
                patch_path: str | None, test_patch_path: str, pre: list[str] | None = None,
                timeout_s: float | None = None) -> str:
    """A bash eval script shaped like the harness's: apply the agent patch (the harness's fallbacks), reset the test
    files to the base commit, apply the test patch, run the tests between the markers, record the exit status,
    reset the test files again."""
    q = shlex.quote
    files = " ".join(q(f) for f in test_files)
    lines = ["#!/bin/bash", "set -uo pipefail", f"cd {q(workdir)}", "git config --global --add safe.directory '*'",
             *(pre or [])]
    if patch_path:
        attempts = " || ".join(f"{cmd} {q(patch_path)}" for cmd in GIT_APPLY_CMDS)
        lines += [f"if {attempts}; then echo {q(APPLY_PATCH_PASS)}; else echo {q(APPLY_PATCH_FAIL)}; exit 1; fi"]
    if files:
        # Files the test patch creates do not exist at the base commit: remove them instead.
        lines += [f"for f in {files}; do if git cat-file -e {q(base_commit)}:\"$f\" 2>/dev/null; then "
                  f"git checkout {q(base_commit)} -- \"$f\" || {{ echo {q(RESET_FAILED)}; exit 1; }}; "
                  "else rm -f \"$f\"; fi; done"]
    lines += [f"git apply --verbose {q(test_patch_path)} || {{ echo {q(TEST_PATCH_FAIL)}; exit 1; }}",
              f"echo {q(START_TEST_OUTPUT)}"]
    run = f"{test_cmd} {' '.join(q(d) for d in directives)}".strip()
    if timeout_s:
        run = f"timeout -s KILL {int(timeout_s)} {run}"
    lines += [run, "SWEBENCH_TEST_EXIT_CODE=$?"]
    if timeout_s:
        lines += [f"if [ $SWEBENCH_TEST_EXIT_CODE -eq 137 ]; then echo {q(TESTS_TIMEOUT)}; fi"]
    lines += [f"echo {q(END_TEST_OUTPUT)}", f"echo \"{TEST_EXIT_CODE}: $SWEBENCH_TEST_EXIT_CODE\""]
    if files:
        lines += [f"for f in {files}; do git checkout {q(base_commit)} -- \"$f\" 2>/dev/null || rm -f \"$f\"; done"]
    return "\n".join(lines) + "\n"
