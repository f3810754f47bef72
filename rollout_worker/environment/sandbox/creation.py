"""How every backend makes a sandbox: a private state dir with its record first (so a crash leaves something the
reaper finds), then the backend's own setup; a setup that fails destroys what it made, whatever it was interrupted by.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any, Protocol

from rollout_worker.environment.sandbox.errors import SandboxError
from rollout_worker.environment.sandbox.registry import SANDBOX_PREFIX, SandboxRecord


class _Settable(Protocol):
    async def _setup(self, task: Any) -> None: ...

    async def destroy(self) -> None: ...


def new_sandbox_dir(state_dir: Path, rollout_id: str, backend: str) -> tuple[Path, SandboxRecord]:
    """A fresh `<state_dir>/sb-<hex>/` (mode 0700) and the record that will describe it."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    sandbox_id = SANDBOX_PREFIX + secrets.token_hex(6)
    root = state_dir / sandbox_id
    root.mkdir(mode=0o700)
    return root, SandboxRecord.for_current_process(sandbox_id, rollout_id, backend)


async def set_up_or_destroy(sandbox: _Settable, record: SandboxRecord, root: Path, task: Any, backend: str) -> None:
    """Save the record, then set the sandbox up for `task`; on any failure destroy it (shielded from cancellation)
    and raise a `SandboxError` (a cancellation or a `SandboxError` passes as it is)."""
    try:
        record.save(root)
        await sandbox._setup(task)
    except BaseException as exc:
        await asyncio.shield(sandbox.destroy())
        if isinstance(exc, (SandboxError, asyncio.CancelledError)):
            raise
        raise SandboxError(f"creating a {backend} sandbox for {task.instance_id} failed: {exc!r}") from exc
