"""Per-test outcomes of one pytest run, read from its JUnit XML report or, failing that, its `-rA` summary.

Task test ids are pytest node ids (`tests/test_x.py::TestC::test_m[param]`). The grader runs whole test *files*
(a node id whose module fails to import would otherwise abort the whole run) and picks the requested ids out here.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

PASSING = frozenset({"passed", "xfailed"})  # SWE-bench counts an expected failure as a pass
# Worst outcome wins when a test is reported twice (e.g. passed, then errored in teardown).
_SEVERITY = {"passed": 0, "xfailed": 1, "skipped": 2, "failed": 3, "error": 4}
_SUMMARY_LINE = re.compile(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS|SKIPPED) (.+)$")
_SUMMARY_OUTCOME = {"PASSED": "passed", "XPASS": "passed", "XFAIL": "xfailed", "FAILED": "failed",
                    "ERROR": "error", "SKIPPED": "skipped"}


@dataclass
class TestOutcomes:
    """Outcome of each requested test id: passed, xfailed, skipped, failed, error or missing (not reported)."""

    __test__ = False

    by_id: dict[str, str] = field(default_factory=dict)
    collection_errors: list[str] = field(default_factory=list)  # test files that failed to import
    # Whether the run reported any failure or error at all, requested or not (a test failing before and after the
    # fix is one): a non-zero exit without one means the report does not describe the run (SWE-bench's rule).
    failure_reported: bool = False

    def outcome(self, test_id: str) -> str:
        return self.by_id.get(test_id, "missing")

    def passed(self, test_id: str) -> bool:
        return self.outcome(test_id) in PASSING

    def any_reported(self, test_ids: list[str]) -> bool:
        return any(self.outcome(t) != "missing" for t in test_ids)


def files_of_tests(test_ids: list[str]) -> list[str]:
    """The distinct files of `test_ids`, in order (`tests/a.py::t` → `tests/a.py`)."""
    return list(dict.fromkeys(t.split("::", 1)[0] for t in test_ids))


def junit_key(node_id: str) -> tuple[str, str]:
    """The (classname, name) pytest's junitxml writes for a node id: path dots for slashes, `.py` dropped."""
    path, bracket, params = node_id.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def _merge(outcomes: dict, key, outcome: str) -> None:
    old = outcomes.get(key)
    if old is None or _SEVERITY[outcome] > _SEVERITY[old]:
        outcomes[key] = outcome


def parse_junit_xml(data: bytes, test_ids: list[str]) -> TestOutcomes:
    """Outcomes of `test_ids` from a pytest JUnit XML report; raises ValueError if the XML is unreadable."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise ValueError(f"bad JUnit XML: {e}") from e
    reported: dict[tuple[str, str], str] = {}
    broken_modules: set[str] = set()
    for case in root.iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        children = {child.tag: child for child in case}
        if "error" in children:
            outcome = "error"
        elif "failure" in children:
            outcome = "failed"
        elif "skipped" in children:
            outcome = "xfailed" if children["skipped"].get("type") == "pytest.xfail" else "skipped"
        else:
            outcome = "passed"
        if not classname and outcome == "error":  # a module that failed to collect is reported by its dotted path
            broken_modules.add(name)
        else:
            _merge(reported, (classname, name), outcome)
    result = TestOutcomes(failure_reported=bool(broken_modules) or any(
        outcome in ("failed", "error") for outcome in reported.values()))
    for test_id in test_ids:
        key = junit_key(test_id)
        if key in reported:
            result.by_id[test_id] = reported[key]
        elif junit_key(test_id.split("::", 1)[0] + "::x")[0] in broken_modules:
            result.by_id[test_id] = "error"
    result.collection_errors = sorted(f for f in files_of_tests(test_ids)
                                      if junit_key(f + "::x")[0] in broken_modules)
    return result


def parse_summary_lines(output: str, test_ids: list[str]) -> TestOutcomes | None:
    """Outcomes of `test_ids` from pytest's `-rA` short summary; None if the output holds no summary line at all."""
    reported: dict[str, str] = {}
    broken_files: set[str] = set()
    seen_any = False
    for line in output.splitlines():
        match = _SUMMARY_LINE.match(line.rstrip())
        if not match:
            continue
        seen_any = True
        status, rest = match.groups()
        node = rest.split(" - ", 1)[0].strip()
        if status == "ERROR" and "::" not in node:
            broken_files.add(node)
        else:
            _merge(reported, node, _SUMMARY_OUTCOME[status])
    if not seen_any:
        return None
    result = TestOutcomes(failure_reported=bool(broken_files) or any(
        outcome in ("failed", "error") for outcome in reported.values()))
    for test_id in test_ids:
        if test_id in reported:
            result.by_id[test_id] = reported[test_id]
        elif test_id.split("::", 1)[0] in broken_files:
            result.by_id[test_id] = "error"
    result.collection_errors = sorted(f for f in files_of_tests(test_ids) if f in broken_files)
    return result
