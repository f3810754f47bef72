"""`intercept-rl tasks synth` refuses bad input in one line before it downloads, builds or writes anything
(issue #24); the shipped manifest loads and the shipped rows load as image tasks in SWE-bench's schema."""

from __future__ import annotations

import json

import pytest

import intercept_rl_cli
from rollout_worker.environment.tasks import load_tasks
from rollout_worker.environment.tasks.loader import TaskLoadError
from rollout_worker.environment.tasks.synth.manifest import SHIPPED_MANIFEST, SHIPPED_ROWS, load_manifest
from tests.support.cli_probe import child_pids
from tests.support.docker import docker_client_or_skip


@pytest.mark.parametrize(("args", "manifest", "says"), [
    (["--package", "toolz"], None, "expected NAME==VERSION"),
    (["--package", "toolz==1.0.0"], None, "--package needs --source and --tests"),
    (["--package", "toolz==1.0.0", "--source", "t/*.py", "--tests", "t", "--manifest", "m.toml"], None,
     "not both"),
    (["--only", "nope"], None, "'nope' is not in the manifest"),
    (["--limit", "0"], None, "--limit must be >= 1"),
    (["--limit", "x"], None, "invalid int value"),
    ([], "[synth]\nseed = 'x'\n[[package]]\nname='a'\nversion='1'\nsource=['a.py']\ntests=['t']\n",
     "[synth].seed: expected int"),
    ([], "[[package]]\nname='a'\nversion='latest'\nsource=['a.py']\ntests=['t']\n", "is not a pinned version"),
    ([], "[[package]]\nname='a'\nversion='1'\ntests=['t']\n", "missing 'source'"),
    ([], "[[package]]\nname='a'\nversion='1'\nsource=['a.py']\ntests=['t']\ncolour='red'\n", "unknown key 'colour'"),
    ([], "[[package]]\nname='a'\nversion='1'\nsource=['a.py']\ntests=['t']\nsingles=-1\n",
     "package[0].singles: expected an integer >= 0"),
    ([], "[[package]]\nname='a'\nversion='1'\nsource=['a.py']\ntests=['t']\ncombined='4'\n",
     "package[0].combined: expected an integer >= 0"),
    ([], "[synth]\nseed = 1\n", "no [[package]] entries"),
    ([], "not toml [", "not valid TOML"),
])
def test_bad_input_is_one_line_before_anything_is_written(tmp_path, capsys, args, manifest, says):
    out = tmp_path / "out"
    argv = ["tasks", "synth", "--out", str(out), *args]
    if manifest is not None:
        (tmp_path / "m.toml").write_text(manifest)
        argv += ["--manifest", str(tmp_path / "m.toml")]
    assert intercept_rl_cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("intercept-rl tasks: ") and says in err and "\n" not in err, err
    assert not out.exists()


def test_missing_out_and_unknown_subcommand(capsys):
    assert intercept_rl_cli.main(["tasks", "synth"]) == 1
    assert "--out" in capsys.readouterr().err
    assert intercept_rl_cli.main(["tasks", "build"]) == 1
    assert "unknown tasks command 'build'" in capsys.readouterr().err


def test_a_package_s_own_selection_overrides_the_manifest_s(tmp_path):
    (tmp_path / "m.toml").write_text("[synth]\nsingles_per_package = 5\ncombined_per_package = 1\nmax_mutants_tried = 9\n"
                                     "[[package]]\nname='a'\nversion='1'\nsource=['a.py']\ntests=['t']\n"
                                     "[[package]]\nname='b'\nversion='1'\nsource=['b.py']\ntests=['t']\nsingles=30\n"
                                     "combined=0\n")
    manifest = load_manifest(tmp_path / "m.toml")
    assert [p.selection(manifest.settings) for p in manifest.packages] == [(5, 1, 9), (30, 0, 9)]


def test_the_shipped_manifest_and_rows_load():
    manifest = load_manifest(SHIPPED_MANIFEST)
    assert len(manifest.packages) >= 8 and manifest.settings.seed == 24
    assert sum(s + c for s, c, _ in (p.selection(manifest.settings) for p in manifest.packages)) >= 200
    if not SHIPPED_ROWS.exists():
        pytest.skip("no shipped rows yet")
    rows = [json.loads(line) for line in SHIPPED_ROWS.read_text().splitlines()]
    tasks = load_tasks(str(SHIPPED_ROWS), image_template=None)
    assert len(tasks) == len(rows) > 0
    for task, row in zip(tasks, rows):
        assert task.image and task.image.startswith("intercept-rl-synth/") and task.repo_dir is None
        assert task.FAIL_TO_PASS and not set(task.FAIL_TO_PASS) & set(task.PASS_TO_PASS)
        assert task.test_patch == "" and task.patch.startswith("diff --git ")
        assert task.extra["test_cmd"].startswith("python -m pytest ")
        removed = [line[1:].strip() for line in task.patch.splitlines()
                   if line.startswith(("-", "+")) and not line.startswith(("---", "+++")) and len(line[1:].strip()) > 12]
        assert not any(line in task.problem_statement for line in removed), task.instance_id  # never the diff


def test_synth_names_the_shipped_set_or_some_of_its_packages():
    everything = load_tasks("synth", image_template=None)
    assert len(everything) == len(SHIPPED_ROWS.read_text().splitlines())
    toolz = load_tasks("synth:toolz,six", image_template=None)
    assert toolz and {t.extra["synth"]["package"] for t in toolz} == {"toolz", "six"}
    assert {t.instance_id for t in toolz} < {t.instance_id for t in everything}
    with pytest.raises(TaskLoadError, match=r"no shipped synthesized task of nope \(shipped: boltons, cachetools"):
        load_tasks("synth:toolz,nope")


@pytest.mark.parametrize("command", ["rollouts", "train"])
def test_a_task_image_that_is_not_built_is_named_before_anything_starts(tmp_path, capsys, command):
    """No registry is used: without this check every rollout of such a task would end as an infra error, after the
    engine started. One line, exit 2, no engine or other process started."""
    docker_client_or_skip()
    row = json.loads(SHIPPED_ROWS.read_text().splitlines()[0])
    row["image"] = "intercept-rl-synth/never-built:" + row["instance_id"].split("__")[-1]
    (tmp_path / "t.jsonl").write_text(json.dumps(row) + "\n")
    out = ["--out", str(tmp_path / "r.jsonl")] if command == "rollouts" else [
        "--preset", "cpu-demo", "--output-dir", str(tmp_path / "run")]
    argv = [command, "--sandbox", "docker", "--agent", "oracle", "--tasks", str(tmp_path / "t.jsonl"), *out]
    assert intercept_rl_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after `datasets`' progress bar for reading the file
    assert err.startswith(f"intercept-rl {command}: 1 of the 1 task images are not present here"), err
    assert "intercept-rl tasks synth --images-only" in err and "\n" not in err and "Traceback" not in err
    assert child_pids() == []
