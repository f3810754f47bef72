"""Grading building blocks: the path filter, pytest report parsing (on a real pytest run) and the subprocess executor."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from rollout_worker.environment.grading.host import SubprocessTestExecutor
from rollout_worker.environment.tasks.pytest_report import (
    files_of_tests,
    junit_key,
    parse_junit_xml,
    parse_summary_lines,
)
from rollout_worker.environment.tasks.trees import TreeFilter
from tests.paths import FIXTURES

SAMPLE = FIXTURES / "outcomes_sample.py.txt"
F = "tests/test_sample.py"
EXPECTED = {
    f"{F}::test_pass": "passed",
    f"{F}::test_fail": "failed",
    f"{F}::test_param[a/b]": "passed",
    f"{F}::test_param[c::d]": "failed",
    f"{F}::test_param[e f]": "passed",
    f"{F}::TestGroup::test_method": "passed",
    f"{F}::test_xfail": "xfailed",
    f"{F}::test_skip": "skipped",
    f"{F}::test_error": "error",
    "tests/test_broken.py::test_never_collected": "error",
    f"{F}::test_not_there": "missing",
}


def test_tree_filter_separates_source_tests_and_junk():
    f = TreeFilter()
    for rel in ["pkg/core.py", "README.md", "pyproject.toml", "pkg/testing_utils.py", "docs/index.md"]:
        assert f.keeps_source(rel), rel
    for rel in ["tests/test_a.py", "pkg/tests/helpers.py", "test_x.py", "pkg/core_test.py", "conftest.py",
                "sub/conftest.py", "pytest.ini", "tox.ini", "setup.cfg", "pkg/test/data.json"]:
        assert f.is_test(rel) and not f.keeps_source(rel), rel
    assert not f.keeps_source("tests", is_dir=True) and f.keeps_source("pkg", is_dir=True)
    # what would shadow the test runner from the repository root is never taken; the same names deeper are source
    for rel in ["pytest.py", "pytest/__init__.py", "_pytest/main.py", "py.py", "pluggy/__init__.py",
                "sitecustomize.py", "usercustomize.py"]:
        assert not f.keeps_source(rel), rel
    assert not f.keeps_source("_pytest", is_dir=True)
    assert f.keeps_source("src/_pytest/main.py") and f.keeps_source("src/pytest/__init__.py")
    for rel in [".git", "pkg/__pycache__/x.pyc", "a.egg-info", ".GIT", "sub/.Git/config", ".pytest_cache"]:
        assert f.is_junk(rel) and not f.keeps_source(rel), rel


def test_junit_key_matches_pytest_naming():
    assert junit_key("tests/test_a.py::test_x") == ("tests.test_a", "test_x")
    assert junit_key("tests/test_a.py::TestC::test_m[p/q::r]") == ("tests.test_a.TestC", "test_m[p/q::r]")
    assert files_of_tests(["a.py::t1", "b.py::t", "a.py::t2"]) == ["a.py", "b.py"]


async def test_reports_of_a_real_pytest_run_are_parsed(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / F).write_text(SAMPLE.read_text())
    (tmp_path / "tests/test_broken.py").write_text("import module_that_does_not_exist\n\n\ndef test_never_collected():\n    pass\n")
    argv = [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "--rootdir=.", "--disable-plugin-autoload",
            "--continue-on-collection-errors", "--junitxml=report.xml", F, "tests/test_broken.py"]
    result = await SubprocessTestExecutor().run(tmp_path, argv, timeout=120)
    assert result.exit_code == 1 and not result.timed_out, result.stdout[-2000:]

    ids = list(EXPECTED)
    junit = parse_junit_xml((tmp_path / "report.xml").read_bytes(), ids)
    assert {t: junit.outcome(t) for t in ids} == EXPECTED
    assert junit.collection_errors == ["tests/test_broken.py"]

    summary = parse_summary_lines(result.stdout, ids)
    # `-rA` reports skips without their node id, so a skipped test reads as not reported there
    assert {t: summary.outcome(t) for t in ids} == {**EXPECTED, f"{F}::test_skip": "missing"}
    assert summary.collection_errors == ["tests/test_broken.py"]

    assert parse_summary_lines("no summary at all\n", ids) is None
    with pytest.raises(ValueError):
        parse_junit_xml(b"<testsuites><testcase", ids)


async def test_executor_scrubs_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("IRL_TEST_FAKE_SECRET", "do-not-leak")
    code = "import os; print(sorted(os.environ)); print(os.getcwd())"
    result = await SubprocessTestExecutor().run(tmp_path, [sys.executable, "-c", code], timeout=60)
    assert result.exit_code == 0
    assert "IRL_TEST_FAKE_SECRET" not in result.stdout and "PATH" in result.stdout
    assert result.stdout.splitlines()[1] == str(tmp_path)


async def test_executor_timeout_kills_the_whole_process_group(tmp_path):
    argv = ["sh", "-c", "sleep 300 & echo $! > child.pid; echo started; sleep 300"]
    started = time.monotonic()
    result = await SubprocessTestExecutor().run(tmp_path, argv, timeout=1.5)
    assert result.timed_out and result.exit_code < 0
    assert time.monotonic() - started < 20
    assert "started" in result.stdout
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{child}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":  # killed, waiting for its (re)parent to reap it
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(f"background child {child} survived the timeout kill")


async def test_executor_keeps_only_the_output_tail(tmp_path):
    code = "import sys; sys.stdout.write('x' * 300000 + 'END')"
    result = await SubprocessTestExecutor(output_limit=1000).run(tmp_path, [sys.executable, "-c", code], 60)
    assert result.exit_code == 0 and len(result.stdout) == 1000 and result.stdout.endswith("END")


async def test_executor_reports_a_missing_program_as_an_error(tmp_path):
    with pytest.raises(OSError):
        await SubprocessTestExecutor().run(tmp_path, [str(tmp_path / "no-such-binary")], 10)
    assert os.listdir(tmp_path) == []
