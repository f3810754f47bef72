"""Task loader: a local SWE-Gym-schema fixture (JSONL and parquet, through `datasets`) with malformed rows."""

from __future__ import annotations

import json

import pytest

from rollout_worker.environment.tasks import (
    SWE_GYM_IMAGE_TEMPLATE,
    TaskLoadConfig,
    TaskLoadError,
    TaskValidationError,
    docker_image_for,
    load_task_report,
    load_tasks,
    task_from_row,
)
from tests.paths import FIXTURES

FIXTURE = FIXTURES / "swe_gym_tasks.jsonl"
VALID_IDS = ["getmoto__moto-5752", "local__demo-1", "pydantic__pydantic-6043", "sympy__sympy-24000"]
# (0-based row, field) of each malformed row in the fixture
BAD_ROWS = [(2, "instance_id"), (3, "FAIL_TO_PASS"), (4, "FAIL_TO_PASS"), (5, "PASS_TO_PASS"),
            (6, "problem_statement"), (7, "instance_id"), (8, "FAIL_TO_PASS"), (11, "repo")]


@pytest.fixture
def ds_cache(tmp_path):
    return str(tmp_path / "hf-datasets-cache")


def fixture_rows() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


def test_jsonl_fixture_skips_bad_rows_and_names_row_and_field(ds_cache, caplog):
    report = load_task_report(str(FIXTURE), TaskLoadConfig(cache_dir=ds_cache))
    assert [t.instance_id for t in report.tasks] == VALID_IDS
    assert [(e.row, e.field) for e in report.rejected] == BAD_ROWS
    assert "skipped 8 invalid task row(s)" in caplog.text
    by_row = {e.row: str(e) for e in report.rejected}
    assert "duplicate" in by_row[7] and "getmoto__moto-5752" in by_row[7]
    assert "not a JSON list" in by_row[4]
    assert "got int" in by_row[11]


def test_json_string_test_lists_are_parsed_and_extra_columns_kept(ds_cache):
    tasks = {t.instance_id: t for t in load_tasks(str(FIXTURE), cache_dir=ds_cache)}
    moto = tasks["getmoto__moto-5752"]
    assert moto.FAIL_TO_PASS == ["tests/test_ssm/test_ssm_boto3.py::test_get_parameter_with_label"]
    assert moto.PASS_TO_PASS == ["tests/test_ssm/test_ssm_boto3.py::test_delete_parameter",
                                 "tests/test_ssm/test_ssm_boto3.py::test_put_parameter"]
    assert moto.base_commit == "b2300f1eae1323e3e8bc45f97e530ce129dff12e"
    assert moto.extra["version"] == "4.0" and moto.extra["hints_text"] == ""
    json.dumps(moto.extra)  # extra travels into trajectory JSONL (datasets parses created_at into a datetime)
    assert moto.extra["created_at"].startswith("2022-12-10T20:23:01")
    # rows that already hold lists load the same way
    assert tasks["sympy__sympy-24000"].PASS_TO_PASS == ["sympy/core/tests/test_basic.py::test_atoms"]


def test_hub_rows_get_an_image_and_local_rows_a_repo_dir(ds_cache):
    tasks = {t.instance_id: t for t in load_tasks(str(FIXTURE), cache_dir=ds_cache)}
    moto = tasks["getmoto__moto-5752"]
    assert moto.repo_dir is None
    assert moto.image == "xingyaoww/sweb.eval.x86_64.getmoto_s_moto-5752"
    assert moto.extra["workdir"] == "/testbed"
    local = tasks["local__demo-1"]
    assert local.image is None and local.repo_dir == str(FIXTURE.parent.resolve())  # relative to the data file

    custom = load_tasks(str(FIXTURE), cache_dir=ds_cache, image_template="registry.local/{repo}:{instance_id}")
    assert {t.instance_id: t.image for t in custom}["getmoto__moto-5752"] == "registry.local/getmoto/moto:getmoto__moto-5752"


def test_without_image_template_rows_without_repo_dir_are_invalid(ds_cache):
    report = load_task_report(str(FIXTURE), TaskLoadConfig(cache_dir=ds_cache, image_template=None))
    assert [t.instance_id for t in report.tasks] == ["local__demo-1"]
    assert any("neither repo_dir nor image" in str(e) for e in report.rejected)


def test_raise_mode_fails_on_first_bad_row(ds_cache):
    with pytest.raises(TaskValidationError) as info:
        load_tasks(str(FIXTURE), cache_dir=ds_cache, on_invalid="raise")
    assert info.value.error.row == 2 and info.value.error.field == "instance_id"
    assert str(info.value) == "row 2: instance_id: is missing or empty"


def test_parquet_goes_through_the_same_path(ds_cache, tmp_path):
    import datasets

    parquet = tmp_path / "data" / "tasks.parquet"
    parquet.parent.mkdir()
    datasets.load_dataset("json", data_files=str(FIXTURE), split="train", cache_dir=ds_cache).to_parquet(parquet)
    report = load_task_report(str(parquet), TaskLoadConfig(cache_dir=ds_cache, split="test"))
    assert [t.instance_id for t in report.tasks] == VALID_IDS
    assert [(e.row, e.field) for e in report.rejected] == BAD_ROWS
    # repo_dir "." is resolved against the parquet file's directory
    assert {t.instance_id: t.repo_dir for t in report.tasks}["local__demo-1"] == str(parquet.parent.resolve())


def test_max_tasks_and_seed(ds_cache):
    first_two = load_tasks(str(FIXTURE), cache_dir=ds_cache, max_tasks=2)
    assert [t.instance_id for t in first_two] == VALID_IDS[:2]
    shuffled = [[t.instance_id for t in load_tasks(str(FIXTURE), cache_dir=ds_cache, seed=s)] for s in (1, 1, 2, 3)]
    assert shuffled[0] == shuffled[1]  # same seed, same order
    assert all(sorted(order) == sorted(VALID_IDS) for order in shuffled)
    assert len({tuple(order) for order in shuffled}) > 1  # different seeds reorder
    # rows past max_tasks are never examined: no rejection is reported for them
    report = load_task_report(str(FIXTURE), TaskLoadConfig(cache_dir=ds_cache, max_tasks=2))
    assert report.rejected == []
    with pytest.raises(ValueError):
        load_tasks(str(FIXTURE), cache_dir=ds_cache, max_tasks=0)


def test_unreadable_sources_give_clear_errors(ds_cache, tmp_path):
    with pytest.raises(TaskLoadError, match="no such file"):
        load_tasks(str(tmp_path / "missing.jsonl"), cache_dir=ds_cache)
    bad_ext = tmp_path / "tasks.csv"
    bad_ext.write_text("a,b\n")
    with pytest.raises(TaskLoadError, match="unsupported file type"):
        load_tasks(str(bad_ext), cache_dir=ds_cache)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instance_id": "x"\n')
    with pytest.raises(TaskLoadError, match="could not load tasks"):
        load_tasks(str(broken), cache_dir=ds_cache)
    only_bad = tmp_path / "only_bad.jsonl"
    only_bad.write_text("\n".join(json.dumps(r) for r in fixture_rows()[2:7]) + "\n")
    with pytest.raises(TaskLoadError, match="no valid tasks"):
        load_tasks(str(only_bad), cache_dir=ds_cache)


def test_task_from_row_validation_messages():
    row = fixture_rows()[0]
    assert task_from_row(row, 0).instance_id == "getmoto__moto-5752"
    cases = [
        ({"base_commit": None}, "base_commit: is missing or empty"),
        ({"patch": 3}, "patch: must be a string, got int"),
        ({"FAIL_TO_PASS": None}, "FAIL_TO_PASS: is empty"),
        ({"FAIL_TO_PASS": 7}, "FAIL_TO_PASS: must be a list of test ids, got int"),
        ({"test_command": "pytest -x"}, "test_command: must be a list of strings"),
        ({"repo_dir": "/nonexistent/dir"}, "repo_dir: '/nonexistent/dir' is not a directory"),
    ]
    for change, message in cases:
        with pytest.raises(TaskValidationError) as info:
            task_from_row({**row, **change}, 4)
        assert str(info.value).startswith(f"row 4 (instance_id='getmoto__moto-5752'): {message}")
    with pytest.raises(TaskValidationError, match="must be an object"):
        task_from_row(["not", "a", "dict"], 0)
    assert task_from_row({**row, "test_command": '["python", "-m", "pytest"]'}, 0).test_command == [
        "python", "-m", "pytest"]


def test_docker_image_template():
    assert docker_image_for("Django__django-11099", "django/django", SWE_GYM_IMAGE_TEMPLATE) == (
        "xingyaoww/sweb.eval.x86_64.django_s_django-11099")
