"""Fixtures shared across the test folders (each folder's conftest.py adds its own)."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from control_plane import GateConfig, InterceptionServer
from rollout_worker.environment.sandbox import LocalSandboxBackend, LocalSandboxConfig
from tests.support.sandboxes import make_task


@pytest.fixture
async def make_gate():
    """Factory: `await make_gate(**GateConfig fields)` → a started InterceptionServer on loopback, stopped at teardown."""
    servers = []

    async def make(**config_fields) -> InterceptionServer:
        server = InterceptionServer(host="127.0.0.1", port=0, config=GateConfig(**config_fields))
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
def state_dir():
    # Short path on purpose: unix socket paths are limited to 108 bytes and pytest's tmp_path is long.
    path = Path(tempfile.mkdtemp(prefix="irl-st-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def backend(state_dir):
    return LocalSandboxBackend(LocalSandboxConfig(state_dir=str(state_dir)))


@pytest.fixture
def task(tmp_path):
    return make_task(tmp_path)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The embedded tiny Qwen3 (built once per machine, cached)."""
    from local_engine.embedded import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def tokenizer():
    """The real Qwen3 tokenizer with TRL's template (shared and read-only: copy it before changing it)."""
    from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer

    return load_qwen3_tokenizer()


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    """The local engine as its own process on the tiny model (4,096 positions), one per test module. Modules that
    need an in-process engine (tests/local_engine, the engine client's tests) define their own `engine`."""
    from intercept_common.engine_process import LocalEngineProcess

    with LocalEngineProcess(str(tiny_model_dir), served_model_name="policy", max_model_len=4096) as proc:
        yield proc


_RESULTS: list[tuple[str, str, float, list[str]]] = []


# `make test-reliability`'s summary table (here, not in tests/reliability/conftest.py: a directory's conftest sees only
# its own tests' reports, and the run includes tests/rollout_worker/environment/test_docker_leaks.py).
def pytest_runtest_logreport(report):
    """Each test's outcome, time and the figures it printed, for the full run's summary table."""
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        printed = [line.strip() for line in report.capstdout.splitlines() if line.strip()]
        _RESULTS.append((report.nodeid, report.outcome, report.duration, printed))


def pytest_terminal_summary(terminalreporter):
    """`make test-reliability` ends with one table: every full-scale piece, its outcome, time and figures."""
    if os.environ.get("RELIABILITY_FULL") != "1" or not _RESULTS:
        return
    write = terminalreporter.write_line
    write("")
    write("| test | outcome | seconds | figures |")
    write("|---|---|---|---|")
    for nodeid, outcome, seconds, printed in _RESULTS:
        figures = " / ".join(printed[-3:]).replace("|", "\\|")[:600]
        path, _, name = nodeid.partition("::")
        write(f"| {path.rsplit('/', 1)[-1]}::{name} | {outcome} | {seconds:.0f} | {figures} |")
    write(f"total: {sum(r[2] for r in _RESULTS):.0f} s of tests; "
          f"{sum(r[1] == 'passed' for r in _RESULTS)} passed, {sum(r[1] != 'passed' for r in _RESULTS)} not")
