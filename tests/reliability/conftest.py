"""The reliability suite's scale: a quick slice in `make test`, the full run with `make test-reliability`.

`RELIABILITY_FULL=1` multiplies every count (≥ 10,000 hostile requests in all); each test prints what it sent and
found, so the full run's output is the report.
"""

from __future__ import annotations

import os

FULL = os.environ.get("RELIABILITY_FULL") == "1"


def scaled(quick: int, full: int) -> int:
    return full if FULL else quick


_RESULTS: list[tuple[str, str, float, list[str]]] = []


def pytest_runtest_logreport(report):
    """Each test's outcome, time and the figures it printed, for the full run's summary table."""
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        printed = [line.strip() for line in report.capstdout.splitlines() if line.strip()]
        _RESULTS.append((report.nodeid, report.outcome, report.duration, printed))


def pytest_terminal_summary(terminalreporter):
    """`make test-reliability` ends with one table: every full-scale piece, its outcome, time and figures."""
    if not FULL or not _RESULTS:
        return
    write = terminalreporter.write_line
    write("")
    write("| test | outcome | seconds | figures |")
    write("|---|---|---|---|")
    for nodeid, outcome, seconds, printed in _RESULTS:
        figures = " / ".join(printed[-3:]).replace("|", "\\|")[:600]
        write(f"| {nodeid.split('/')[-1]} | {outcome} | {seconds:.0f} | {figures} |")
    write(f"total: {sum(r[2] for r in _RESULTS):.0f} s of tests; "
          f"{sum(r[1] == 'passed' for r in _RESULTS)} passed, {sum(r[1] != 'passed' for r in _RESULTS)} not")
