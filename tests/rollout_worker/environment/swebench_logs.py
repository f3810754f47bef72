"""A corpus of eval logs in the harness's format, written here (not taken from any dataset), over 13 SWE-bench
repositories, each with the verdict its shape implies. The differential test grades each through the project and
through swebench's own functions; the verdicts must agree with each other and with the label."""

from __future__ import annotations

from dataclasses import dataclass

START, END, EXIT = ">>>>> Start Test Output", ">>>>> End Test Output", ">>>>> Test Exit Code"
GREEN, RED, RESET = "\x1b[32m", "\x1b[31m", "\x1b[0m"


@dataclass(frozen=True)
class LogCase:
    name: str
    repo: str
    fail_to_pass: tuple[str, ...]
    pass_to_pass: tuple[str, ...]
    log: str
    resolved: bool
    log_parser: str | None = None  # a row that names its parser


def harness_log(body: str, exit_code: int | None, head: str = "") -> str:
    """The eval script's output: the set -x trace, the markers, the recorded exit status, the reset after."""
    tail = f"{EXIT}: {exit_code}\n" if exit_code is not None else ""
    return (f"+ source /opt/miniconda3/bin/activate\n+ conda activate testbed\n+ cd /testbed\n{head}"
            f"+ git apply -v -\nChecking patch tests/x.py...\nApplied patch tests/x.py cleanly.\n"
            f"+ : '{START}'\n{START}\n{body}\n+ : '{END}'\n{END}\n{tail}+ git checkout abc1234 tests/x.py\n")


def _pytest(repo: str, root: str, v2: bool = False) -> list[LogCase]:
    """Six shapes of a pytest `-rA` log for one repository."""
    f2p = (f"{root}::test_fixed",)
    p2p = (f"{root}::test_kept", f"{root}::test_param[a-1]")
    c = GREEN if v2 else ""
    r = RESET if v2 else ""

    def line(status: str, test: str, msg: str = "") -> str:
        return f"{c}{status}{r} {test}" + (f" - {msg}" if msg else "")

    everything = [line("PASSED", t) for t in (*f2p, *p2p)]
    return [
        LogCase(f"{repo}:gold", repo, f2p, p2p, harness_log("\n".join(["collected 3 items", *everything]), 0), True),
        LogCase(f"{repo}:f2p-fails", repo, f2p, p2p, harness_log("\n".join(
            [line("FAILED", f2p[0], "AssertionError: 1 != 2"), *everything[1:]]), 1), False),
        LogCase(f"{repo}:p2p-broken", repo, f2p, p2p, harness_log("\n".join(
            [everything[0], line("FAILED", p2p[0], "assert 0"), everything[2]]), 1), False),
        LogCase(f"{repo}:f2p-missing", repo, f2p, p2p, harness_log("\n".join(everything[1:]), 0), False),
        LogCase(f"{repo}:forged-exit-4", repo, f2p, p2p, harness_log("\n".join(everything), 4), False),
        # pytest_v2 keeps an XFAIL line's reason in the id (only FAILED lines are cut at " - "): the harness then
        # finds no such F2P test, so the verdict differs by parser.
        LogCase(f"{repo}:xfail-and-skip", repo, f2p, p2p, harness_log("\n".join(
            [line("XFAIL", f2p[0], "known"), line("SKIPPED", p2p[0]), everything[2],
             "SKIPPED [1] tests/conftest.py:12: needs network"]), 0), not v2),
    ]


def corpus() -> list[LogCase]:
    cases: list[LogCase] = []
    cases += _pytest("pytest-dev/pytest", "testing/test_mark.py")
    cases += _pytest("pallets/flask", "tests/test_basic.py")
    cases += _pytest("pydata/xarray", "xarray/tests/test_dataarray.py")
    cases += _pytest("psf/requests", "tests/test_requests.py")
    cases += _pytest("pylint-dev/pylint", "tests/test_self.py")
    cases += _pytest("scikit-learn/scikit-learn", "sklearn/tests/test_base.py", v2=True)
    cases += _pytest("astropy/astropy", "astropy/io/fits/tests/test_header.py", v2=True)

    # Parametrized ids with spaces (astropy, scikit-learn, sphinx): the whole id is the test.
    spaced = ("astropy/units/tests/test_format.py::test_roundtrip[unit0 - fits]",)
    cases.append(LogCase("astropy:id-with-spaces", "astropy/astropy", spaced,
                         ("astropy/units/tests/test_format.py::test_ok",),
                         harness_log(f"PASSED {spaced[0]}\nPASSED astropy/units/tests/test_format.py::test_ok", 0),
                         True))
    cases.append(LogCase("scikit:id-with-spaces-fails", "scikit-learn/scikit-learn",
                         ("sklearn/tests/test_common.py::test_est[LogisticRegression(C=1, tol=0.1)]",), (),
                         harness_log("FAILED sklearn/tests/test_common.py::test_est[LogisticRegression(C=1, tol=0.1)]"
                                     " - ValueError: bad", 1), False))
    # Sphinx through tox, coloured.
    sphinx_f2p = ("tests/test_ext_autodoc.py::test_autodoc_typehints[signature with spaces]",)
    sphinx_p2p = ("tests/test_build_html.py::test_html5_output[index.html]",)
    colour = (f"py39: commands[0]> python -X dev -m pytest -rA --durations 25\n"
              f"{GREEN}PASSED{RESET} {sphinx_f2p[0]}\n{GREEN}PASSED{RESET} {sphinx_p2p[0]}\n"
              f"{GREEN}  py39: OK (12.31=setup[0.02]+cmd[12.29] seconds){RESET}")
    cases.append(LogCase("sphinx:colour-gold", "sphinx-doc/sphinx", sphinx_f2p, sphinx_p2p, harness_log(colour, 0),
                         True))
    cases.append(LogCase("sphinx:colour-f2p-fails", "sphinx-doc/sphinx", sphinx_f2p, sphinx_p2p, harness_log(
        f"{RED}FAILED{RESET} {sphinx_f2p[0]} - AssertionError\n{GREEN}PASSED{RESET} {sphinx_p2p[0]}", 1), False))
    cases.append(LogCase("sphinx:colour-p2p-error", "sphinx-doc/sphinx", sphinx_f2p, sphinx_p2p, harness_log(
        f"{GREEN}PASSED{RESET} {sphinx_f2p[0]}\n{RED}ERROR{RESET} {sphinx_p2p[0]} - fixture 'app' failed", 1),
        False))

    # matplotlib: MouseButton members in ids are read as their numbers.
    mpl_f2p = ("lib/matplotlib/tests/test_backend_bases.py::test_interactive_zoom[1]",)
    mpl_p2p = ("lib/matplotlib/tests/test_widgets.py::test_span_selector[3-True]",)
    cases.append(LogCase("matplotlib:mousebutton-gold", "matplotlib/matplotlib", mpl_f2p, mpl_p2p, harness_log(
        "PASSED lib/matplotlib/tests/test_backend_bases.py::test_interactive_zoom[MouseButton.LEFT]\n"
        "PASSED lib/matplotlib/tests/test_widgets.py::test_span_selector[MouseButton.RIGHT-True]", 0), True))
    cases.append(LogCase("matplotlib:mousebutton-fails", "matplotlib/matplotlib", mpl_f2p, mpl_p2p, harness_log(
        "FAILED lib/matplotlib/tests/test_backend_bases.py::test_interactive_zoom[MouseButton.LEFT] - assert\n"
        "PASSED lib/matplotlib/tests/test_widgets.py::test_span_selector[MouseButton.RIGHT-True]", 1), False))
    cases.append(LogCase("matplotlib:truncated-id", "matplotlib/matplotlib",
                         ("lib/matplotlib/tests/test_text.py::test_font[DejaVu",), (), harness_log(
                             "PASSED lib/matplotlib/tests/test_text.py::test_font[DejaVu Sans-12]\n"
                             "PASSED lib/matplotlib/tests/test_text.py::test_font[DejaVu Serif-12]", 0), True))

    # seaborn: pytest's verbose `id PASSED` lines.
    sb = ("tests/test_core.py::TestHueMapping::test_init_from_map",)
    sb_p2p = ("tests/test_core.py::TestSizeMapping::test_plotter_default_init",)
    cases.append(LogCase("seaborn:gold", "mwaskom/seaborn", sb, sb_p2p, harness_log(
        f"{sb[0]} PASSED [ 50%]\n{sb_p2p[0]} PASSED [100%]", 0), True))
    cases.append(LogCase("seaborn:f2p-fails", "mwaskom/seaborn", sb, sb_p2p, harness_log(
        f"{sb_p2p[0]} PASSED [ 50%]\nFAILED {sb[0]} - KeyError", 1), False))

    # sympy's own runner.
    sym_f2p, sym_p2p = ("test_issue_24062",), ("test_Add_is_zero", "test_Mul_doesnt_expand_exp")
    sym_head = "============================= test process starts ==============================\n" \
               "sympy/core/tests/test_arit.py[3] "
    cases.append(LogCase("sympy:gold", "sympy/sympy", sym_f2p, sym_p2p, harness_log(
        f"{sym_head}\ntest_issue_24062 ok\ntest_Add_is_zero ok\ntest_Mul_doesnt_expand_exp ok\n"
        "================== tests finished: 3 passed, in 0.51 seconds ===================", 0), True))
    cases.append(LogCase("sympy:f2p-fails", "sympy/sympy", sym_f2p, sym_p2p, harness_log(
        f"{sym_head}\ntest_issue_24062 F\ntest_Add_is_zero ok\ntest_Mul_doesnt_expand_exp ok\n"
        "________________________________________________________________________________\n"
        "_________ sympy/core/tests/test_arit.py:test_issue_24062 _________\nAssertionError", 1), False))
    cases.append(LogCase("sympy:p2p-error", "sympy/sympy", sym_f2p, sym_p2p, harness_log(
        f"{sym_head}\ntest_issue_24062 ok\ntest_Add_is_zero E\ntest_Mul_doesnt_expand_exp ok", 1), False))

    # Django's runner, including the django__django-7188 shape (a migration's output on the test's own line).
    dj_f2p = ("test_no_migrations (migrations.test_commands.MakeMigrationsTests)",)
    dj_p2p = ("test_sqlmigrate (migrations.test_commands.SqlMigrateTests)",
              "test_squash (migrations.test_commands.SquashTests)")
    cases.append(LogCase("django:7188-shape", "django/django", dj_f2p, dj_p2p, harness_log(
        "Applying sites.0002_alter_domain_unique...test_no_migrations "
        "(migrations.test_commands.MakeMigrationsTests) ... ok\n"
        f"{dj_p2p[0]} ... ok\n{dj_p2p[1]} ... ok\n\nRan 3 tests in 0.311s\n\nOK", 0), True))
    cases.append(LogCase("django:gold", "django/django", dj_f2p, dj_p2p, harness_log(
        f"{dj_f2p[0]} ... ok\n{dj_p2p[0]} ... ok\n{dj_p2p[1]} ... skipped 'no sqlparse'\n\nOK (skipped=1)", 0),
        True))
    cases.append(LogCase("django:f2p-fails", "django/django", dj_f2p, dj_p2p, harness_log(
        f"{dj_f2p[0]} ... FAIL\n{dj_p2p[0]} ... ok\n{dj_p2p[1]} ... ok\n"
        f"======\nFAIL: {dj_f2p[0].split()[0]} {dj_f2p[0].split()[1]}\nAssertionError\n\nFAILED (failures=1)", 1),
        False))
    cases.append(LogCase("django:p2p-error", "django/django", dj_f2p, dj_p2p, harness_log(
        f"{dj_f2p[0]} ... ok\n{dj_p2p[0]} ... ERROR\n{dj_p2p[1]} ... ok\n\nFAILED (errors=1)", 1), False))
    cases.append(LogCase("django:output-between-dots-and-ok", "django/django", dj_f2p, (), harness_log(
        f"{dj_f2p[0]} ... System check identified no issues (0 silenced).\nok\n\nOK", 0), True))
    # A lone carriage return splits a line when the log is read as the harness reads it (text mode).
    cases.append(LogCase("django:lone-carriage-return", "django/django", dj_f2p, dj_p2p[:1], harness_log(
        f"progress 10%\r{dj_f2p[0]} ... ok\n{dj_p2p[0]} ... ok\n\nOK", 0), True))

    # A teardown error after the test passed, as pytest reports it.
    td = ("tests/test_appctx.py::test_teardown",)
    cases.append(LogCase("flask:teardown-error", "pallets/flask", td, (), harness_log(
        f"PASSED {td[0]}\nERROR {td[0]} - RuntimeError: teardown failed", 1), False))
    # The last line wins the status map (PASSED), but the run exited 1 with no failure left in it: not trusted.
    cases.append(LogCase("flask:error-then-passed-exit-1", "pallets/flask", td, (), harness_log(
        f"ERROR {td[0]} - RuntimeError\nPASSED {td[0]}", 1), False))
    # Rows that name the harness's parser explicitly, in both spellings.
    cases.append(LogCase("requests:named-parser", "psf/requests", ("tests/test_utils.py::test_x[/tmp/a/b.txt]",), (),
                         harness_log("PASSED tests/test_utils.py::test_x[/home/u/b.txt]", 0), False,
                         log_parser="parse_log_pytest"))
    cases.append(LogCase("requests:named-options-parser", "psf/requests", ("tests/test_utils.py::test_x[/b.txt]",),
                         (), harness_log("PASSED tests/test_utils.py::test_x[/home/u/b.txt]", 0), True,
                         log_parser="pytest_options"))
    # A SWE-Gym repository (not in the harness's map): graded with the harness's pytest parser.
    cases.append(LogCase("moto:swe-gym-gold", "getmoto/moto", ("tests/test_s3/test_s3.py::test_put",),
                         ("tests/test_s3/test_s3.py::test_get",), harness_log(
                             "PASSED tests/test_s3/test_s3.py::test_put\nPASSED tests/test_s3/test_s3.py::test_get", 0),
                         True))
    cases.append(LogCase("moto:swe-gym-fails", "getmoto/moto", ("tests/test_s3/test_s3.py::test_put",), (),
                         harness_log("FAILED tests/test_s3/test_s3.py::test_put - botocore.ClientError", 1), False))
    # No results: the patch did not apply (the agent's), the suite never ran.
    cases.append(LogCase("pytest:patch-apply-failed", "pytest-dev/pytest", ("testing/test_a.py::test_b",), (),
                         ">>>>> Patch Apply Failed\nerror: patch failed: src/_pytest/main.py:10\n", False))
    cases.append(LogCase("pytest:no-results", "pytest-dev/pytest", ("testing/test_a.py::test_b",), (), harness_log(
        "ImportError while loading conftest '/testbed/testing/conftest.py'.", 4), False))
    return cases


# Logs that say nothing about the agent: the project calls them unscorable where the harness says "not resolved".
INFRA_LOGS = {
    "markers missing": "+ pytest -rA\nPASSED tests/test_x.py::test_fixed\n",
    "test patch did not apply": "+ git apply -v /tmp/test.patch\n>>>>> Test Patch Apply Failed\n",
    "reset failed": ">>>>> Reset Failed\n",
    "our timeout": harness_log("PASSED tests/test_x.py::test_fixed", 124) + "\n\nTimeout error: 60 seconds exceeded.",
    "harness timeout marker": harness_log(">>>>> Tests Timed Out", None),
}
