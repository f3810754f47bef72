"""Start and stop a local engine subprocess (what `rollouts --engine local` and `train` use on CPU boxes)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from intercept_common.errors import UserError
from intercept_common.served_model import DEFAULT_SERVED_MODEL_NAME

# Set for the engine it starts: the engine exits once this process (its parent) is gone (local_engine.cli).
PARENT_PID_ENV = "INTERCEPT_RL_ENGINE_PARENT_PID"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EngineStartError(RuntimeError, UserError):
    """The local engine exited during startup or never became healthy; the message holds its log's tail."""


class LocalEngineProcess:
    """`intercept-rl engine` in its own process group, stopped on every path (context manager, `stop()`)."""

    def __init__(self, model: str, *, served_model_name: str = DEFAULT_SERVED_MODEL_NAME, host: str = "127.0.0.1",
                 max_model_len: int | None = None, dtype: str = "float32", seed: int = 0,
                 startup_timeout_s: float = 180.0, extra_args: list[str] | None = None):
        self.model, self.served_model_name, self.host = model, served_model_name, host
        self.max_model_len, self.dtype, self.seed = max_model_len, dtype, seed
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self._log = None

    def start(self) -> "LocalEngineProcess":
        port = _free_port(self.host)
        argv = [sys.executable, "-m", "intercept_rl_cli", "engine", "--model", self.model, "--host", self.host,
                "--port", str(port), "--served-model-name", self.served_model_name, "--dtype", self.dtype,
                "--seed", str(self.seed), *self.extra_args]
        if self.max_model_len:
            argv += ["--max-model-len", str(self.max_model_len)]
        # The log has no name on disk once the engine holds it: whoever dies first (even by SIGKILL), the file
        # goes when both sides have closed it, so a killed run leaves no log behind. The tail is read through our fd.
        self._log = tempfile.TemporaryFile(prefix="intercept-rl-engine-", suffix=".log")
        # The engine exits when this process dies (it watches its parent), so a SIGKILLed trainer leaves no engine.
        env = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                     cwd=str(Path(__file__).resolve().parent.parent), env=env)
        self.url = f"http://{self.host}:{port}"
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if (code := self.proc.poll()) is not None:
                tail = self.log_tail()
                self.stop()
                raise EngineStartError(f"local engine exited with code {code} during startup:\n{tail}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        tail = self.log_tail()
        self.stop()
        raise EngineStartError(f"local engine did not become healthy within {self.startup_timeout_s:.0f} s:\n{tail}")

    def log_tail(self, n_bytes: int = 4000) -> str:
        if self._log is None:
            return ""
        try:
            size = os.fstat(self._log.fileno()).st_size
            return os.pread(self._log.fileno(), n_bytes, max(0, size - n_bytes)).decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout_s: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=timeout_s)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "LocalEngineProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
