"""SWE-bench / SWE-Gym grading by the `swebench` package itself: the harness of record, pinned in locks/project.txt.

Everything that decides a verdict comes from the package (swebench 5.0.2): the log parser of each repository
(`PARSER_REGISTRY`, `MAP_REPO_TO_PARSER_*`), how the log is read and turned into a status map (`get_logs_eval`: the
file read in text mode, the slice between the markers, the fallback to the whole log, the exit-code cross-check), the
FAIL_TO_PASS / PASS_TO_PASS report with its rule for truncated parametrized ids, and the resolved verdict
(`get_eval_report`). A row's own `eval_script` (the schema of SWE-bench's current datasets) is run as the harness runs
it (`make_test_spec`: `parse_eval_script` + `record_test_exit_code`), after the agent's patch is applied with the
harness's fallbacks (`GIT_APPLY_CMDS`, a clean tree between attempts, the reverse check).

What is ours, and why:
- `INFRA_EVIDENCE`: the markers that make a log unscorable (never reward 0) because they say nothing about the agent.
  The harness reports such runs "not resolved"; for training that would teach the policy from our failures.
- An eval script for classic rows that carry none (swebench 5.x dropped its per-repository, per-version spec table:
  the datasets carry `eval_script` now). It is shaped like the harness's: test files reset to the base commit, the test
  patch applied, the repository's test command (`REPO_TEST_CMD`) with the test directives taken from the test patch
  between the harness's markers, the exit status recorded by the package's own `record_test_exit_code`.
The package is imported on first use (about 3 s: its harness package imports docker, datasets and modal).
"""

from __future__ import annotations

import enum
import functools
import json
import re
import shlex
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollout_worker.environment.tasks.schema import parse_test_ids

# Evidence that a log says nothing about the agent's change: unscorable, never reward 0. One place, documented in
# docs/containers.md ("What is unscorable"). The harness's own patch-apply failure is not here: that is the agent's.
TEST_PATCH_FAIL = ">>>>> Test Patch Apply Failed"  # ours: a generated script could not apply the task's test patch
INFRA_EVIDENCE: tuple[tuple[str, str], ...] = (
    (TEST_PATCH_FAIL, "the task's test patch did not apply"),
    (">>>>> Reset Failed", "resetting the test files to the base commit failed"),  # the harness's RESET_FAILED
    (">>>>> Tests Timed Out", "the test run timed out"),  # the harness's TESTS_TIMEOUT
    ("Timeout error: ", "the test run timed out"),  # what the harness appends to a log its timeout cut
)
MARKERS_MISSING = "the test output markers are missing: the eval script did not run to its end"
_HARNESS_TIMEOUT = re.compile(r"^Timeout error: \d+ seconds exceeded\.", re.M)

# The repository's test command for classic rows without an `eval_script` (SWE-bench's harness commands; the
# per-version variants of older releases are not reproduced: a row that needs one carries `eval_script` or
# `test_cmd`). Every other repository runs `TEST_PYTEST`.
TEST_PYTEST = "pytest --no-header -rA --tb=no -p no:cacheprovider"
REPO_TEST_CMD = {
    "django/django": "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1",
    "sympy/sympy": "PYTHONWARNINGS='ignore::UserWarning,ignore::SyntaxWarning' bin/test -C --verbose",
    "sphinx-doc/sphinx": "tox --current-env -epy39 -v --",
    "astropy/astropy": "pytest -rA -vv -o console_output_style=classic --tb=no",
    "mwaskom/seaborn": "pytest --no-header -rA",
    "matplotlib/matplotlib": "pytest -rA", "scikit-learn/scikit-learn": "pytest -rA", "pydata/xarray": "pytest -rA",
    "pylint-dev/pylint": "pytest -rA", "pallets/flask": "pytest -rA", "psf/requests": "pytest -rA",
    "pytest-dev/pytest": "pytest -rA",
}


class Verdict(enum.Enum):
    RESOLVED = "resolved"
    NOT_RESOLVED = "not_resolved"
    UNSCORABLE = "unscorable"


class RowError(ValueError):
    """A row cannot be graded as given (a missing field, an unknown parser): one line naming the field."""


@functools.cache
def _harness() -> Any:
    """The package's modules, imported once (see the module docstring for the cost)."""
    import types

    from swebench.harness import constants, grading, log_parsers, utils
    from swebench.harness.log_parsers import c, go, java, javascript, php, python, ruby, rust

    repo_parsers: dict[str, Any] = {}
    for module in (python, javascript, c, go, java, php, ruby, rust):
        for name, value in vars(module).items():
            if name.startswith("MAP_REPO_TO_PARSER"):
                repo_parsers.update(value)
    return types.SimpleNamespace(constants=constants, grading=grading, registry=log_parsers.PARSER_REGISTRY,
                                 repo_parsers=repo_parsers, utils=utils)


def parser_names() -> list[str]:
    """Every parser name a row's `log_parser` may give (`parse_log_django` or `django`)."""
    return sorted(_harness().registry)


def repositories_with_a_parser() -> dict[str, str]:
    """Each repository in the package's parser maps → the registry name graded by default (a TestSpec names its
    parser by registry name, so a repository whose map entry is not registered is left out)."""
    harness = _harness()
    by_function: dict[Any, str] = {}
    for name, fn in harness.registry.items():
        by_function.setdefault(fn, name)
    named = {}
    for repo, fn in harness.repo_parsers.items():
        own = "parse_log_" + repo.split("/")[-1].replace("-", "_").replace(".", "_")  # pallets/flask: parse_log_flask
        if harness.registry.get(own) is fn:
            named[repo] = own
        elif fn in by_function:
            named[repo] = by_function[fn]
    return named


def parser_for(repo: str, requested: str | None = None) -> tuple[str, str]:
    """(registry name, where it came from: `row`, `repository` or `default`) for one row; RowError if unknown."""
    registry = _harness().registry
    if requested:
        name = requested if requested.startswith("parse_log_") else f"parse_log_{requested}"
        if name not in registry:
            raise RowError(f"log_parser {requested!r} is not one of swebench's parsers "
                           f"(e.g. parse_log_pytest, parse_log_django; `intercept-rl grade --list-parsers`)")
        return name, "row"
    by_repo = repositories_with_a_parser()
    if repo in by_repo:
        return by_repo[repo], "repository"
    return "parse_log_pytest", "default"  # SWE-Gym's repositories (moto, mypy, pandas, …) log pytest's -rA summary


def _test_ids(row: Mapping[str, Any], key: str) -> tuple[str, ...]:
    if row.get(key) is None:
        raise RowError(f"{key} is missing (SWE-bench's schema: a list of test ids, or a JSON string of one)")
    try:
        return tuple(parse_test_ids(row[key]))
    except ValueError as exc:
        raise RowError(f"{key} {exc}") from None


@dataclass(frozen=True)
class HarnessRow:
    """What the harness needs of one row in SWE-bench's schema to grade a log of it."""

    instance_id: str
    repo: str
    version: str
    fail_to_pass: tuple[str, ...]
    pass_to_pass: tuple[str, ...]
    log_parser: str
    log_parser_source: str
    eval_type: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> HarnessRow:
        """Validate a row (a dataset row, or a Task's fields plus `extra`); RowError names the field."""
        if not isinstance(row, Mapping):
            raise RowError(f"a row must be a JSON object, got {type(row).__name__}")
        for key in ("instance_id", "repo"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise RowError(f"{key} is missing or empty")
        version = row.get("version")
        if version is None or isinstance(version, (dict, list)):
            raise RowError("version is missing (SWE-bench's schema names the repository version, e.g. \"3.0\")")
        requested = row.get("log_parser") or None
        if requested is not None and not isinstance(requested, str):
            raise RowError("log_parser must be a string such as parse_log_pytest")
        parser, source = parser_for(row["repo"], requested)
        fail_only = row["repo"] in _harness().constants.FAIL_ONLY_REPOS
        eval_type = row.get("eval_type") or ("fail_only" if fail_only else "pass_and_fail")
        if eval_type not in ("pass_and_fail", "fail_only"):
            raise RowError(f"eval_type {eval_type!r} must be pass_and_fail or fail_only")
        return cls(row["instance_id"], row["repo"], str(version), _test_ids(row, "FAIL_TO_PASS"),
                   _test_ids(row, "PASS_TO_PASS"), parser, source, eval_type)

    def test_spec(self, eval_script_list: list[str] | None = None) -> Any:
        from swebench.types import TestSpec

        return TestSpec(instance_id=self.instance_id, image="", eval_script_list=eval_script_list or [],
                        repo=self.repo, version=self.version, FAIL_TO_PASS=list(self.fail_to_pass),
                        PASS_TO_PASS=list(self.pass_to_pass), log_parser=self.log_parser, eval_type=self.eval_type)


@dataclass
class LogGrade:
    """The verdict on one eval log, with each listed test's status (`MISSING` when the log does not report it)."""

    verdict: Verdict
    reason: str | None = None
    tests: dict[str, str] = field(default_factory=dict)
    fail_to_pass: dict[str, list[str]] = field(default_factory=lambda: {"success": [], "failure": []})
    pass_to_pass: dict[str, list[str]] = field(default_factory=lambda: {"success": [], "failure": []})
    test_exit_code: int | None = None
    infra_hint: str | None = None  # the harness's advisory classification of a log without results

    @property
    def resolved(self) -> bool | None:
        return None if self.verdict is Verdict.UNSCORABLE else self.verdict is Verdict.RESOLVED

    def fraction(self) -> float:
        succeeded = len(self.fail_to_pass["success"]) + len(self.pass_to_pass["success"])
        total = succeeded + len(self.fail_to_pass["failure"]) + len(self.pass_to_pass["failure"])
        return succeeded / total if total else 0.0

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"resolved": self.resolved, "tests": self.tests}
        if self.reason:
            out["reason"] = self.reason
        return out


def _why_no_results(text: str, exit_code: int | None, status_map: dict[str, str]) -> str:
    constants = _harness().constants
    if constants.APPLY_PATCH_FAIL in text:
        return "the agent's patch did not apply"
    if constants.TESTS_ERROR in text:
        return "the tests errored"
    if exit_code not in (None, 0) and status_map:
        return f"the test command exited {exit_code} but the log reports no failing test (output not to be trusted)"
    return "the log holds no test results"


def grade_log(log: str | bytes, row: HarnessRow) -> LogGrade:
    """Grade one eval log (the output of the eval script, as the harness saves it) with the harness's functions."""
    text = log.decode("utf-8", "replace") if isinstance(log, bytes) else log
    harness = _harness()
    exit_code = harness.grading.parse_test_exit_code(text)
    for marker, why in INFRA_EVIDENCE:
        if marker in text and (marker != "Timeout error: " or _HARNESS_TIMEOUT.search(text)):
            return LogGrade(Verdict.UNSCORABLE, why, test_exit_code=exit_code)
    constants = harness.constants
    if constants.START_TEST_OUTPUT not in text or constants.END_TEST_OUTPUT not in text:
        if constants.APPLY_PATCH_FAIL not in text:
            return LogGrade(Verdict.UNSCORABLE, MARKERS_MISSING, test_exit_code=exit_code)
    spec = row.test_spec()
    with tempfile.TemporaryDirectory(prefix="irl-swb-log-") as tmp:
        path = Path(tmp) / "test_output.txt"
        with open(path, "w") as handle:  # written and read back exactly as run_evaluation does (text mode)
            handle.write(text)
        status_map, found = harness.grading.get_logs_eval(spec, str(path))
        prediction = {"instance_id": row.instance_id, "model_patch": "", "model_name_or_path": "intercept-rl"}
        report = harness.grading.get_eval_report(spec, prediction, str(path), include_tests_status=True)
    entry = report[row.instance_id]
    if not found:
        parsed = harness.registry[row.log_parser](text.split(constants.START_TEST_OUTPUT)[-1], spec)
        return LogGrade(Verdict.NOT_RESOLVED, _why_no_results(text, exit_code, parsed),
                        tests={t: "MISSING" for t in (*row.fail_to_pass, *row.pass_to_pass)},
                        fail_to_pass={"success": [], "failure": list(row.fail_to_pass)},
                        pass_to_pass={"success": [], "failure": list(row.pass_to_pass)},
                        test_exit_code=exit_code, infra_hint=entry.get("infra_failure_reason"))
    statuses = entry["tests_status"]
    # truncated ids: the harness's private helper, pinned by test_swebench_grading.py
    resolve = getattr(harness.grading, "_resolve_case", None)
    tests = {}
    for test in (*row.fail_to_pass, *row.pass_to_pass):
        key = resolve(test, status_map) if resolve else (test if test in status_map else None)
        tests[test] = status_map[key] if key is not None else "MISSING"
    return LogGrade(Verdict.RESOLVED if entry["resolved"] else Verdict.NOT_RESOLVED,
                    None if entry["resolved"] else "not every FAIL_TO_PASS and PASS_TO_PASS test succeeds",
                    tests=tests, fail_to_pass=statuses["FAIL_TO_PASS"], pass_to_pass=statuses["PASS_TO_PASS"],
                    test_exit_code=exit_code)


# -- running it: the agent patch, the eval script ------------------------------------------------------------------
def apply_patch_script(workdir: str, patch_path: str) -> str:
    """The harness's patch application (run_evaluation): each of GIT_APPLY_CMDS in turn on a clean tree, then the
    reverse check; prints the harness's APPLY_PATCH_PASS / APPLY_PATCH_FAIL marker and exits non-zero on failure."""
    from swebench.harness.run_evaluation import GIT_APPLY_CMDS

    constants, q = _harness().constants, shlex.quote
    lines = ["#!/bin/bash", f"cd {q(workdir)}", "git config --global --add safe.directory '*'", "first=1"]
    for cmd in GIT_APPLY_CMDS:
        lines += ["[ $first = 1 ] || { git checkout -- . ; git clean -fd; } >/dev/null 2>&1; first=0",
                  f"if {cmd} {q(patch_path)}; then echo {q(constants.APPLY_PATCH_PASS)}; exit 0; fi"]
    lines += [f"if git apply --check --reverse {q(patch_path)}; then echo {q(constants.APPLY_PATCH_PASS)}; exit 0; fi",
              f"echo {q(constants.APPLY_PATCH_FAIL)}", "exit 1"]
    return "\n".join(lines) + "\n"


def _patch_files(patch: str) -> list[str]:
    """The files a patch touches, as the harness finds them (`diff --git a/… b/<file>`)."""
    return re.findall(r"diff --git a/.* b/(.*)", patch)


def test_directives(repo: str, test_patch: str) -> list[str]:
    """The harness's test directives: the test patch's files without NON_TEST_EXTS (Django: dotted modules)."""
    non_test = _harness().constants.NON_TEST_EXTS
    files = [f for f in _patch_files(test_patch) if not any(f.endswith(e) for e in non_test)]
    if repo == "django/django":
        return [f.removesuffix(".py").removeprefix("tests/").replace("/", ".") for f in files]
    return files


test_directives.__test__ = False  # type: ignore[attr-defined]


def eval_script(row: Mapping[str, Any], *, workdir: str, base_commit: str, test_patch_path: str,
                test_cmd: str | None = None, pre: list[str] | None = None) -> tuple[str, str]:
    """(the eval script, where it came from: `row` or `generated`). A row's `eval_script` runs as the harness runs it;
    otherwise one is generated (see the module docstring)."""
    harness = _harness()
    if isinstance(row.get("eval_script"), str) and row["eval_script"].strip():
        listed = harness.utils.record_test_exit_code(harness.utils.parse_eval_script(row["eval_script"]))
        return "\n".join(["#!/bin/bash", "set -uxo pipefail", *listed]) + "\n", "row"
    constants, q = harness.constants, shlex.quote
    repo, test_patch = str(row.get("repo", "")), str(row.get("test_patch") or "")
    files = _patch_files(test_patch)
    reset = (f"for f in {' '.join(q(f) for f in files)}; do if git cat-file -e {q(base_commit)}:\"$f\" 2>/dev/null; "
             f"then git checkout {q(base_commit)} -- \"$f\" || {{ echo {q(constants.RESET_FAILED)}; exit 1; }}; "
             "else rm -f \"$f\"; fi; done") if files else ":"
    command = test_cmd or REPO_TEST_CMD.get(repo, TEST_PYTEST)
    lines = [f"cd {q(workdir)}", "git config --global --add safe.directory '*'", *(pre or []), reset]
    if test_patch.strip():
        lines.append(f"git apply --verbose {q(test_patch_path)} || {{ echo {q(TEST_PATCH_FAIL)}; exit 1; }}")
    lines += [f"echo {q(constants.START_TEST_OUTPUT)}",
              " ".join([command, *(q(d) for d in test_directives(repo, test_patch))]),
              f"echo {q(constants.END_TEST_OUTPUT)}", reset]
    listed = harness.utils.record_test_exit_code(lines)
    return "\n".join(["#!/bin/bash", "set -uo pipefail", *listed]) + "\n", "generated"


def image_name(instance_id: str, flavor: str = "swe-bench") -> str:
    """The evaluation image of an instance: `flavor` is `swe-bench` or `swe-gym` (`schema.docker_image_for`)."""
    from rollout_worker.environment.tasks.schema import SWE_GYM_IMAGE_TEMPLATE, docker_image_for

    templates = {"swe-bench": "swebench/sweb.eval.x86_64.{swebench_id}:latest", "swe-gym": SWE_GYM_IMAGE_TEMPLATE}
    if flavor not in templates:
        raise ValueError(f"unknown image flavor {flavor!r}: expected 'swe-bench' or 'swe-gym'")
    return docker_image_for(instance_id, "", templates[flavor])
