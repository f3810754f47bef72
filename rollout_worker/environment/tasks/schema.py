"""Validate one SWE-Gym / SWE-bench style row into a `Task`, with errors that name the row and the field.

Accepted row schema (extra columns such as `hints_text`, `created_at`, `version`, `environment_setup_commit` are kept
in `Task.extra`):

- `instance_id`, `repo`, `base_commit`, `problem_statement`: non-empty strings (required).
- `patch`, `test_patch`: strings (may be empty or missing).
- `FAIL_TO_PASS` (non-empty), `PASS_TO_PASS` (may be empty): lists of test ids, or a JSON string holding such a list
  (SWE-bench and SWE-Gym store them as strings).
- `repo_dir`: a local checkout at `base_commit` (relative paths are taken from the data file's directory).
- `image`: a Docker image holding the repository. Hub rows have neither a `repo_dir` nor an `image`: they get one
  from `image_template` and can then only run on the docker sandbox backend (grading on the host also needs a local
  base checkout, i.e. a `repo_dir`).
- `test_command`: argv (list or JSON string) run in the repository root; test files are appended. Default: pytest.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollout_worker.types import Task

# SWE-Gym's evaluation images (https://github.com/SWE-Gym/SWE-Gym): `owner__repo-123` → `owner_s_repo-123`.
SWE_GYM_IMAGE_TEMPLATE = "xingyaoww/sweb.eval.x86_64.{docker_id}"
SWE_BENCH_WORKDIR = "/testbed"  # where SWE-bench / SWE-Gym images hold the repository

_REQUIRED_STRINGS = ("instance_id", "repo", "base_commit", "problem_statement")
_OPTIONAL_STRINGS = ("patch", "test_patch")
_KNOWN = {*_REQUIRED_STRINGS, *_OPTIONAL_STRINGS, "FAIL_TO_PASS", "PASS_TO_PASS", "repo_dir", "image",
          "test_command", "extra"}


@dataclass(frozen=True)
class RowError:
    """Why one row was rejected. `row` is the 0-based index in the source (`dataset[row]`, line row+1 of a JSONL)."""

    row: int
    field: str | None
    message: str
    instance_id: str | None = None

    def __str__(self) -> str:
        where = f"row {self.row}" + (f" (instance_id={self.instance_id!r})" if self.instance_id else "")
        return f"{where}: {self.field + ': ' if self.field else ''}{self.message}"


class TaskValidationError(ValueError):
    """A row does not describe a usable task; `.error` says which row and field."""

    def __init__(self, error: RowError):
        super().__init__(str(error))
        self.error = error


def docker_image_for(instance_id: str, repo: str, template: str) -> str:
    """Fill an image template. Fields: `{instance_id}`, `{repo}`, `{docker_id}` (lower-case, `__` → `_s_`, SWE-Gym's
    naming) and `{swebench_id}` (lower-case, `__` → `_1776_`, SWE-bench's official `swebench/sweb.eval.x86_64.*`)."""
    docker_id = instance_id.lower().replace("__", "_s_")
    swebench_id = instance_id.lower().replace("__", "_1776_")
    return template.format(instance_id=instance_id, repo=repo, docker_id=docker_id, swebench_id=swebench_id)


def parse_test_ids(value: Any) -> list[str]:
    """SWE-bench's FAIL_TO_PASS / PASS_TO_PASS: a list of test ids, or a JSON string of one (the published datasets
    store them so). ValueError says what is wrong, without the field's name; None is for the caller to judge."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as e:
            raise ValueError(f"is a string but not a JSON list of test ids ({e.msg})") from None
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"must be a list of test ids, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"item {i} must be a non-empty string, got {item!r}")
    return list(value)


def _test_ids(value: Any, name: str, fail: Any) -> list[str]:
    if value is None:
        return []
    try:
        return parse_test_ids(value)
    except ValueError as e:
        fail(name, str(e))
        raise  # unreachable: `fail` raises


def _json_safe(value: Any) -> Any:
    # Extra columns travel into trajectory JSONL: `datasets` turns ISO dates into datetimes, which JSON cannot hold.
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _argv(value: Any, fail: Any) -> list[str] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            fail("test_command", "must be a list of strings (or a JSON string holding one)")
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(a, str) for a in value):
        fail("test_command", f"must be a non-empty list of strings, got {value!r}")
    return list(value)


def task_from_row(
    row: Mapping[str, Any],
    row_index: int,
    *,
    image_template: str | None = SWE_GYM_IMAGE_TEMPLATE,
    base_dir: Path | None = None,
) -> Task:
    """Build a `Task` from one dataset row; raises `TaskValidationError` naming the row and field."""
    if not isinstance(row, Mapping):
        raise TaskValidationError(RowError(row_index, None, f"must be an object, got {type(row).__name__}"))
    raw_id = row.get("instance_id")
    instance_id = raw_id if isinstance(raw_id, str) and raw_id.strip() else None

    def fail(field_name: str | None, message: str):
        raise TaskValidationError(RowError(row_index, field_name, message, instance_id))

    values: dict[str, Any] = {}
    for name in _REQUIRED_STRINGS:
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            fail(name, "is missing or empty")
        if not isinstance(value, str):
            fail(name, f"must be a string, got {type(value).__name__}")
        values[name] = value
    for name in _OPTIONAL_STRINGS:
        value = row.get(name)
        if value is not None and not isinstance(value, str):
            fail(name, f"must be a string, got {type(value).__name__}")
        values[name] = value or ""

    fail_to_pass = _test_ids(row.get("FAIL_TO_PASS"), "FAIL_TO_PASS", fail)
    if not fail_to_pass:
        fail("FAIL_TO_PASS", "is empty: a task needs at least one test that the fix makes pass")
    pass_to_pass = _test_ids(row.get("PASS_TO_PASS"), "PASS_TO_PASS", fail)

    extra = {k: v for k, v in row.items() if k not in _KNOWN}
    if isinstance(row.get("extra"), Mapping):
        extra.update(row["extra"])

    repo_dir = row.get("repo_dir") or None
    if repo_dir is not None:
        if not isinstance(repo_dir, str):
            fail("repo_dir", f"must be a string path, got {type(repo_dir).__name__}")
        path = Path(repo_dir).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_dir():
            fail("repo_dir", f"{str(path)!r} is not a directory")
        repo_dir = str(path.resolve())

    image = row.get("image") or None
    if image is not None and not isinstance(image, str):
        fail("image", f"must be a string, got {type(image).__name__}")
    if repo_dir is None and image is None:
        if image_template is None:
            fail("repo_dir", "the row has neither repo_dir nor image, and no image template is configured")
        image = docker_image_for(values["instance_id"], values["repo"], image_template)
        extra.setdefault("workdir", SWE_BENCH_WORKDIR)

    return Task(
        instance_id=values["instance_id"],
        repo=values["repo"],
        base_commit=values["base_commit"],
        problem_statement=values["problem_statement"],
        patch=values["patch"],
        test_patch=values["test_patch"],
        FAIL_TO_PASS=fail_to_pass,
        PASS_TO_PASS=pass_to_pass,
        repo_dir=repo_dir,
        image=image,
        test_command=_argv(row.get("test_command"), fail),
        extra=_json_safe(extra),
    )
