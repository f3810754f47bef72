"""Tasks: the SWE-Gym / SWE-bench row schema, the loader (embedded set, local files, hub datasets) and the
embedded offline task set. See `loader.load_tasks`."""

from rollout_worker.environment.tasks.embedded_tasks import embedded_task_names, materialize_embedded_repo
from rollout_worker.environment.tasks.loader import (
    TaskLoadConfig,
    TaskLoadError,
    TaskLoadReport,
    load_task_report,
    load_tasks,
)
from rollout_worker.environment.tasks.schema import (
    SWE_GYM_IMAGE_TEMPLATE,
    RowError,
    TaskValidationError,
    docker_image_for,
    task_from_row,
)

__all__ = [
    "SWE_GYM_IMAGE_TEMPLATE",
    "RowError",
    "TaskLoadConfig",
    "TaskLoadError",
    "TaskLoadReport",
    "TaskValidationError",
    "docker_image_for",
    "embedded_task_names",
    "load_task_report",
    "load_tasks",
    "materialize_embedded_repo",
    "task_from_row",
]
