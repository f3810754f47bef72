"""Validation of a synthesized task through the project's container grader (issue #24): the task's /testbed as the
image holds it, graded in a fresh container of the image by `SweBenchContainerGrader` (the official `swebench`
verdict), must score 0.0 unchanged and 1.0 with the gold patch applied. Anything else drops the task, with the
reason."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollout_worker.environment.grading.container_common import ContainerGradingConfig
from rollout_worker.environment.grading.host import GradingConfig
from rollout_worker.environment.grading.swebench_container import SweBenchContainerGrader
from rollout_worker.environment.tasks.schema import task_from_row


@dataclass
class Validation:
    ok: bool
    reason: str = ""
    gold_reward: float | None = None
    nochange_reward: float | None = None
    seconds: float = 0.0


def grader(client: Any, test_timeout_s: float = 300.0) -> SweBenchContainerGrader:
    return SweBenchContainerGrader(ContainerGradingConfig(grading=GradingConfig(test_timeout_s=test_timeout_s)),
                                   client=client)


async def validate_row(row: dict[str, Any], client: Any, container_grader: SweBenchContainerGrader) -> Validation:
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = task_from_row(row, 0, image_template=None)
    work = Path(tempfile.mkdtemp(prefix="irl-synth-validate-"))
    try:
        tree = work / "testbed"
        await asyncio.to_thread(container_grader._export_base, client, task.image, "/testbed", tree)
        nochange = await container_grader.grade(task, tree)
        if not nochange.scorable or nochange.reward != 0.0:
            return Validation(False, f"no change scored {nochange.reward} (scorable={nochange.scorable}, "
                              f"{nochange.details.get('reason', '')})"[:300], nochange_reward=nochange.reward,
                              seconds=loop.time() - started)
        (work / "gold.patch").write_text(task.patch)
        done = await asyncio.to_thread(subprocess.run, ["git", "apply", "--whitespace=nowarn", str(work / "gold.patch")],
                                       cwd=tree, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            return Validation(False, f"gold patch does not apply: {done.stderr.strip()[:200]}",
                              nochange_reward=0.0, seconds=loop.time() - started)
        gold = await container_grader.grade(task, tree)
        if not gold.scorable or gold.reward != 1.0:
            failing = (gold.details.get("pass_to_pass") or {}).get("failure", []) + \
                (gold.details.get("fail_to_pass") or {}).get("failure", [])
            return Validation(False, f"gold patch scored {gold.reward} (scorable={gold.scorable}, "
                              f"{gold.details.get('reason', '')}; failing {failing[:3]})"[:300],
                              gold_reward=gold.reward, nochange_reward=0.0, seconds=loop.time() - started)
        return Validation(True, gold_reward=1.0, nochange_reward=0.0, seconds=loop.time() - started)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)
