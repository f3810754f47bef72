"""SWE-bench grading is the `swebench` package's: the differential test (the project's `grade_log` against the
harness's own functions on the same logs), every repository of its Python parser map graded by default, the eval
scripts, and `intercept-rl grade` on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from swebench.harness import grading
from swebench.harness.constants import EvalType, ResolvedStatus
from swebench.harness.log_parsers.python import MAP_REPO_TO_PARSER_PY
from swebench.types import TestSpec as HarnessTestSpec

from rollout_worker.environment.tasks import swebench as swb
from tests.rollout_worker.environment.swebench_logs import INFRA_LOGS, LogCase, corpus

CASES = corpus()


def _row(case: LogCase) -> swb.HarnessRow:
    row = {"instance_id": f"x__y-{abs(hash(case.name)) % 10**6}", "repo": case.repo, "version": "1.0",
           "FAIL_TO_PASS": json.dumps(case.fail_to_pass), "PASS_TO_PASS": list(case.pass_to_pass)}
    if case.log_parser:
        row["log_parser"] = case.log_parser
    return swb.HarnessRow.from_row(row)


def _harness_verdict(case: LogCase, tmp_path: Path) -> bool:
    """The verdict of swebench's own functions, called here directly on the log file (not through the project)."""
    if case.log_parser:
        parser = case.log_parser if case.log_parser.startswith("parse_log_") else f"parse_log_{case.log_parser}"
    else:
        fn = MAP_REPO_TO_PARSER_PY.get(case.repo, grading.PARSER_REGISTRY["parse_log_pytest"])
        parser = next(name for name, f in grading.PARSER_REGISTRY.items() if f is fn)
    spec = HarnessTestSpec(instance_id="i", image="", eval_script_list=[], repo=case.repo, version="1.0",
                    FAIL_TO_PASS=list(case.fail_to_pass), PASS_TO_PASS=list(case.pass_to_pass), log_parser=parser,
                    eval_type=EvalType.PASS_AND_FAIL.value)
    path = tmp_path / f"{abs(hash(case.name))}.log"
    path.write_bytes(case.log.encode())  # the saved test_output.txt, read back by the harness itself
    status_map, found = grading.get_logs_eval(spec, str(path))
    if not found:
        return False
    report = grading.get_eval_tests_report(status_map, {"FAIL_TO_PASS": spec.FAIL_TO_PASS,
                                                        "PASS_TO_PASS": spec.PASS_TO_PASS})
    return grading.get_resolution_status(report) == ResolvedStatus.FULL.value


def test_the_corpus_spans_the_repositories_the_issue_names():
    repos = Counter(case.repo for case in CASES)
    assert len(CASES) >= 40 and len(repos) >= 8, (len(CASES), repos)
    for needed in ("sympy/sympy", "sphinx-doc/sphinx", "matplotlib/matplotlib", "django/django"):
        assert repos[needed] >= 3, needed
    names = {case.name for case in CASES}
    assert {"django:7188-shape", "astropy:id-with-spaces", "flask:teardown-error", "sphinx:colour-gold"} <= names


def test_differential_project_vs_swebench_functions(tmp_path):
    """Every log: the project's verdict == swebench's verdict on the same log == the label the log was written for."""
    disagreements, counts = [], Counter()
    for case in CASES:
        ours = swb.grade_log(case.log.encode(), _row(case))
        theirs = _harness_verdict(case, tmp_path)
        counts["agree" if ours.resolved is theirs else "disagree"] += 1
        if ours.resolved is not theirs or theirs is not case.resolved:
            disagreements.append((case.name, ours.resolved, theirs, case.resolved, ours.reason))
    print(f"differential: {counts['agree']} / {len(CASES)} logs agree over "
          f"{len({c.repo for c in CASES})} repositories")
    assert disagreements == []


@pytest.mark.parametrize("name", sorted(INFRA_LOGS))
def test_logs_that_say_nothing_about_the_agent_are_unscorable(name):
    row = swb.HarnessRow.from_row({"instance_id": "a__b-1", "repo": "pytest-dev/pytest", "version": "8.0",
                                   "FAIL_TO_PASS": ["tests/test_x.py::test_fixed"], "PASS_TO_PASS": []})
    graded = swb.grade_log(INFRA_LOGS[name], row)
    assert graded.verdict is swb.Verdict.UNSCORABLE and graded.resolved is None and graded.reason, graded


def test_forged_passes_in_a_failed_run_are_not_resolved_and_say_why():
    case = next(c for c in CASES if c.name == "pytest-dev/pytest:forged-exit-4")
    graded = swb.grade_log(case.log, _row(case))
    assert graded.verdict is swb.Verdict.NOT_RESOLVED and "exited 4" in graded.reason and graded.test_exit_code == 4


def test_every_repository_of_the_python_parser_map_grades_by_default():
    """No refusal: each repository gets its harness parser without the row naming one, and a gold log resolves."""
    by_default = swb.repositories_with_a_parser()
    assert set(MAP_REPO_TO_PARSER_PY) <= set(by_default)
    for repo, fn in MAP_REPO_TO_PARSER_PY.items():
        row = swb.HarnessRow.from_row({"instance_id": "a__b-1", "repo": repo, "version": "1",
                                       "FAIL_TO_PASS": ["t"], "PASS_TO_PASS": []})
        assert grading.PARSER_REGISTRY[row.log_parser] is fn and row.log_parser_source == "repository", repo
    assert swb.parser_for("getmoto/moto") == ("parse_log_pytest", "default")  # SWE-Gym's repositories
    assert swb.parser_for("x/y", "django") == swb.parser_for("x/y", "parse_log_django") == ("parse_log_django", "row")
    with pytest.raises(swb.RowError, match="not one of swebench's parsers"):
        swb.parser_for("x/y", "parse_log_nonesuch")


def test_truncated_ids_resolve_through_the_harness_helper():
    """The one private helper used (`grading._resolve_case`), pinned: a truncated parametrized id reports its match."""
    assert grading._resolve_case("t.py::f[a", {"t.py::f[a-b]": "PASSED"}) == "t.py::f[a-b]"
    case = next(c for c in CASES if c.name == "matplotlib:truncated-id")
    assert swb.grade_log(case.log, _row(case)).tests == {case.fail_to_pass[0]: "PASSED"}


def test_row_eval_script_runs_as_the_harness_runs_it():
    script = "#!/bin/bash\nset -uxo pipefail\ncd /testbed\n: '>>>>> Start Test Output'\npytest -rA t.py\n" \
             ": '>>>>> End Test Output'\ngit checkout abc t.py\n"
    text, source = swb.eval_script({"eval_script": script, "repo": "a/b"}, workdir="/testbed", base_commit="abc",
                                   test_patch_path="/tmp/t.patch")
    assert source == "row"
    assert text.splitlines()[4:8] == ["pytest -rA t.py", "SWEBENCH_TEST_EXIT_CODE=$?", ": '>>>>> End Test Output'",
                                      'echo ">>>>> Test Exit Code: $SWEBENCH_TEST_EXIT_CODE"']


def test_generated_eval_script_uses_the_repository_command_and_directives(tmp_path):
    patch = ("diff --git a/tests/forms_tests/test_x.py b/tests/forms_tests/test_x.py\n--- a/x\n+++ b/x\n"
             "diff --git a/tests/data/fixture.json b/tests/data/fixture.json\n")
    text, source = swb.eval_script({"repo": "django/django", "test_patch": patch}, workdir="/testbed",
                                   base_commit="abc", test_patch_path="/tmp/t.patch")
    assert source == "generated"
    assert "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1 forms_tests.test_x\n" in text
    assert "fixture" not in text.split(">>>>> Start Test Output")[1].split("\n")[1]  # NON_TEST_EXTS left out
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)  # it parses


def _grade_cli(*args: str) -> subprocess.CompletedProcess:
    """The installed command, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "intercept_rl_cli", "grade", *args], capture_output=True,
                          text=True, timeout=300)


def _grade_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """The same dispatcher in this process (the swebench import is paid once, not per call)."""
    import intercept_rl_cli

    code = intercept_rl_cli.main(["grade", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_grade_command_on_logs_of_several_repositories(tmp_path, capsys):
    picked = ["django:7188-shape", "sympy:f2p-fails", "sphinx:colour-gold", "astropy:id-with-spaces",
              "pytest-dev/pytest:forged-exit-4"]
    for case in (c for c in CASES if c.name in picked):
        row = {"instance_id": "a__b-1", "repo": case.repo, "version": "1.0",
               "FAIL_TO_PASS": json.dumps(case.fail_to_pass), "PASS_TO_PASS": json.dumps(case.pass_to_pass)}
        (tmp_path / "row.json").write_text(json.dumps(row))
        (tmp_path / "log.txt").write_bytes(case.log.encode())
        code, stdout, stderr = _grade_in_process(capsys, "--instance", str(tmp_path / "row.json"), "--log",
                                                 str(tmp_path / "log.txt"), "--json")
        assert code == (0 if case.resolved else 1), (case.name, stderr)
        out = json.loads(stdout)
        assert out["resolved"] is case.resolved and set(out["tests"]) == {*case.fail_to_pass, *case.pass_to_pass}
        assert ("reason" in out) is (not case.resolved)
    # a rollout record holding the log grades the same, through the installed command
    (tmp_path / "record.json").write_text(json.dumps({"details": {"eval_log": INFRA_LOGS["reset failed"]}}))
    proc = _grade_cli("--instance", str(tmp_path / "row.json"), "--log", str(tmp_path / "record.json"), "--json")
    assert proc.returncode == 3 and json.loads(proc.stdout)["resolved"] is None, proc.stderr
    forged = next(c for c in CASES if c.name == "pytest-dev/pytest:forged-exit-4")
    (tmp_path / "forged.log").write_text(forged.log)
    (tmp_path / "row.json").write_text(json.dumps({"instance_id": "a__b-1", "repo": forged.repo, "version": "8.0",
                                                   "FAIL_TO_PASS": list(forged.fail_to_pass),
                                                   "PASS_TO_PASS": list(forged.pass_to_pass)}))
    proc = _grade_cli("--instance", str(tmp_path / "row.json"), "--log", str(tmp_path / "forged.log"))
    assert proc.returncode == 1 and proc.stdout.startswith("a__b-1: NOT RESOLVED (the test command exited 4"), (
        proc.stdout, proc.stderr)


@pytest.mark.parametrize("row, message", [
    ({"repo": "a/b", "version": "1", "FAIL_TO_PASS": [], "PASS_TO_PASS": []}, "instance_id is missing"),
    ({"instance_id": "a", "repo": "a/b", "FAIL_TO_PASS": [], "PASS_TO_PASS": []}, "version is missing"),
    ({"instance_id": "a", "repo": "a/b", "version": "1", "PASS_TO_PASS": []}, "FAIL_TO_PASS is missing"),
    ({"instance_id": "a", "repo": "a/b", "version": "1", "FAIL_TO_PASS": "[x", "PASS_TO_PASS": []}, "JSON list"),
    ({"instance_id": "a", "repo": "a/b", "version": "1", "FAIL_TO_PASS": [], "PASS_TO_PASS": [],
      "log_parser": "nope"}, "not one of swebench's parsers"),
])
def test_grade_command_rejects_bad_rows_in_one_line(tmp_path, capsys, row, message):
    (tmp_path / "row.json").write_text(json.dumps(row))
    (tmp_path / "log.txt").write_text("x")
    code, _, stderr = _grade_in_process(capsys, "--instance", str(tmp_path / "row.json"), "--log",
                                        str(tmp_path / "log.txt"))
    assert code == 2 and message in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_grade_command_missing_files_and_arguments(tmp_path, capsys):
    code, _, stderr = _grade_in_process(capsys, "--instance", str(tmp_path / "nope.json"), "--log",
                                        str(tmp_path / "nope.log"))
    assert code == 2 and "no such file" in stderr and "Traceback" not in stderr
    with pytest.raises(SystemExit) as exited:
        _grade_in_process(capsys, "--log", "x", "--bogus")
    assert exited.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
    code, _, stderr = _grade_in_process(capsys, "--log", "x")
    assert code == 2 and "required" in stderr
