"""Fixtures shared by the worker tests of this package."""

from __future__ import annotations

import threading

import pytest

from intercept_common.engine_process import LocalEngineProcess


@pytest.fixture(scope="package")
def engines(tiny_model_dir):
    """Two local engines on the tiny model, started at once (each start is mostly waiting on its own imports); shared
    by test_ray_cluster.py and test_replicas_e2e.py, whose last tests kill them (that module runs after the other)."""
    procs = [LocalEngineProcess(str(tiny_model_dir), served_model_name="policy", max_model_len=4096) for _ in range(2)]
    errors: list[BaseException] = []

    def start(proc: LocalEngineProcess) -> None:
        try:
            proc.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(p,)) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    try:
        if errors or any(t.is_alive() for t in threads):
            raise RuntimeError(f"an engine did not start: {errors}")
        yield procs
    finally:
        for proc in procs:
            proc.stop()
