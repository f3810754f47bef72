"""Load tasks from the embedded set, the shipped synthesized set, a local JSON / JSONL / parquet file or directory, or a
Hugging Face Hub dataset.

Files and hub datasets all go through `datasets.load_dataset`, so the local path exercises the same code as the hub
path. Rows are validated one by one (`schema.task_from_row`); bad rows are skipped and counted, or fail the load.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from intercept_common.errors import UserError

from rollout_worker.environment.tasks.embedded_tasks import LEARNING_DIR, embedded_rows
from rollout_worker.environment.tasks.schema import SWE_GYM_IMAGE_TEMPLATE, RowError, TaskValidationError, task_from_row
from rollout_worker.types import Task

logger = logging.getLogger(__name__)

_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".json.gz": "json", ".jsonl.gz": "json", ".parquet": "parquet"}


class TaskLoadError(RuntimeError, UserError):
    """The task source could not be read, or no valid task was left (the message says why)."""


@dataclass
class TaskLoadConfig:
    """Where tasks come from and which of them to keep."""

    split: str = field(default="train", metadata={"help": "Dataset split (hub datasets). Local files are one split."})
    max_tasks: int | None = field(default=None, metadata={"help": "Keep at most this many valid tasks."})
    seed: int | None = field(
        default=None, metadata={"help": "Shuffle rows with this seed before taking `max_tasks` (None: file order)."}
    )
    on_invalid: Literal["skip", "raise"] = field(
        default="skip", metadata={"help": "`skip`: drop bad rows, count and log them. `raise`: fail on the first."}
    )
    image_template: str | None = field(
        default=SWE_GYM_IMAGE_TEMPLATE,
        metadata={"help": "Docker image for rows with neither repo_dir nor image; fields {instance_id}, {repo}, "
                  "{docker_id}. None: such rows are invalid."},
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "`datasets` cache dir (default: the HF datasets cache)."}
    )
    embedded_cache_dir: str | None = field(
        default=None, metadata={"help": "Where embedded task repos are materialized (default: the user cache)."}
    )


@dataclass
class TaskLoadReport:
    """The tasks kept and the rows rejected (only rows that were examined: loading stops at `max_tasks`)."""

    source: str
    tasks: list[Task]
    rejected: list[RowError]


def _file_builder(path: Path) -> str | None:
    name = path.name.lower()
    return next((b for suffix, b in _FILE_BUILDERS.items() if name.endswith(suffix)), None)


def _read_rows(spec: str, config: TaskLoadConfig) -> tuple[Any, Path | None]:
    """A sequence of row dicts (a `datasets.Dataset` or a list) and the dir that relative repo_dirs refer to."""
    if spec == "embedded" or spec.startswith("embedded:"):
        names = [n for n in spec.partition(":")[2].split(",") if n] or None
        return embedded_rows(names, Path(config.embedded_cache_dir) if config.embedded_cache_dir else None), None
    if spec == "learning" or spec.startswith("learning:"):
        names = [n for n in spec.partition(":")[2].split(",") if n] or None
        cache = Path(config.embedded_cache_dir) if config.embedded_cache_dir else None
        return embedded_rows(names, cache, root=LEARNING_DIR), None
    if spec == "synth" or spec.startswith("synth:"):
        return _shipped_synth_rows(spec), None

    import datasets  # heavy; only needed for files and hub datasets

    path = Path(spec).expanduser()
    try:
        if path.is_file():
            builder = _file_builder(path)
            if builder is None:
                raise TaskLoadError(f"{spec}: unsupported file type (use .json, .jsonl or .parquet)")
            # One file is one split: name it after the requested split so `split=` always resolves.
            ds = datasets.load_dataset(builder, data_files={config.split: str(path)}, split=config.split,
                                       cache_dir=config.cache_dir)
            return ds, path.parent.resolve()
        if path.is_dir():
            return datasets.load_dataset(str(path), split=config.split, cache_dir=config.cache_dir), path.resolve()
        if spec.startswith((".", "/", "~")) or _file_builder(path):
            raise TaskLoadError(f"{spec}: no such file or directory")
        # A hub dataset name (e.g. SWE-Gym/SWE-Gym): same code path, network needed.
        return datasets.load_dataset(spec, split=config.split, cache_dir=config.cache_dir), None
    except TaskLoadError:
        raise
    except Exception as e:  # datasets raises many types (FileNotFoundError, DatasetGenerationError, hub errors)
        raise TaskLoadError(f"could not load tasks from {spec!r} (split {config.split!r}): "
                            f"{type(e).__name__}: {e}") from e


def _shipped_synth_rows(spec: str) -> list[dict[str, Any]]:
    """`synth` = every shipped synthesized task (tasks/synth/shipped/tasks.jsonl); `synth:toolz,six` = those packages'."""
    from rollout_worker.environment.tasks.synth.manifest import SHIPPED_ROWS

    rows = [json.loads(line) for line in SHIPPED_ROWS.read_text(encoding="utf-8").splitlines() if line.strip()]
    shipped = sorted({row["synth"]["package"] for row in rows})
    wanted = {name for name in spec.partition(":")[2].split(",") if name}
    unknown = sorted(wanted - set(shipped))
    if unknown:
        raise TaskLoadError(f"--tasks {spec}: no shipped synthesized task of {', '.join(unknown)} "
                            f"(shipped: {', '.join(shipped)})")
    return [row for row in rows if not wanted or row["synth"]["package"] in wanted]


def _harbor_tasks(spec: str) -> list[Task] | None:
    """Harbor task dirs (`tasks.harbor`): a task dir, or a dir of them; None when `spec` is not one."""
    from rollout_worker.environment.tasks.harbor import is_harbor_task, load_harbor_tasks

    path = Path(spec).expanduser()
    if not path.is_dir() or (path / "dataset_info.json").exists():
        return None
    if is_harbor_task(path) or any(is_harbor_task(p) for p in path.iterdir() if p.is_dir()):
        return load_harbor_tasks(path)
    return None


def load_task_report(spec: str, config: TaskLoadConfig | None = None) -> TaskLoadReport:
    """Load and validate tasks from `spec` ("embedded", "embedded:name1,name2", "synth", "synth:pkg1,pkg2", a path, a Harbor task dir or a dir of
    them, or a hub dataset name)."""
    config = config or TaskLoadConfig()
    if config.max_tasks is not None and config.max_tasks < 1:
        raise ValueError("max_tasks must be >= 1 (or None)")
    harbor = _harbor_tasks(spec)
    if harbor is not None:
        return TaskLoadReport(source=spec, tasks=harbor[: config.max_tasks], rejected=[])
    rows, base_dir = _read_rows(spec, config)
    order = list(range(len(rows)))
    if config.seed is not None:
        random.Random(config.seed).shuffle(order)

    tasks: list[Task] = []
    rejected: list[RowError] = []
    seen: set[str] = set()
    for index in order:
        if config.max_tasks is not None and len(tasks) >= config.max_tasks:
            break
        try:
            task = task_from_row(rows[index], index, image_template=config.image_template, base_dir=base_dir)
            if task.instance_id in seen:
                raise TaskValidationError(RowError(index, "instance_id", "duplicate instance_id", task.instance_id))
        except TaskValidationError as e:
            if config.on_invalid == "raise":
                raise
            rejected.append(e.error)
            continue
        seen.add(task.instance_id)
        tasks.append(task)

    if rejected:
        shown = "; ".join(str(e) for e in rejected[:5])
        logger.warning("%s: skipped %d invalid task row(s): %s%s", spec, len(rejected), shown,
                       " ..." if len(rejected) > 5 else "")
    if not tasks:
        raise TaskLoadError(f"{spec}: no valid tasks ({len(rejected)} row(s) rejected"
                            f"{': ' + str(rejected[0]) if rejected else ''})")
    return TaskLoadReport(source=spec, tasks=tasks, rejected=rejected)


def load_tasks(
    spec: str,
    *,
    split: str = "train",
    max_tasks: int | None = None,
    seed: int | None = None,
    on_invalid: Literal["skip", "raise"] = "skip",
    image_template: str | None = SWE_GYM_IMAGE_TEMPLATE,
    cache_dir: str | None = None,
    embedded_cache_dir: str | None = None,
) -> list[Task]:
    """Load validated tasks; see `TaskLoadConfig` for the options and `load_task_report` for the rejected rows."""
    config = TaskLoadConfig(split=split, max_tasks=max_tasks, seed=seed, on_invalid=on_invalid,
                            image_template=image_template, cache_dir=cache_dir,
                            embedded_cache_dir=embedded_cache_dir)
    return load_task_report(spec, config).tasks
