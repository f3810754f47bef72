"""space_app/start.sh with stand-in `vllm`, `accelerate`, `nvidia-smi` and `bwrap` executables on PATH.

The stand-ins record their argv, the environment variables that matter and when they ran; the stand-in vLLM serves
`/health` on loopback with http.server (or never becomes healthy, or crashes, or dies during training). Checked: the
launch order (the trainer only after vLLM is healthy), vLLM's training flags, the GPU split, the health-wait timeout,
the exit when vLLM dies, the one-GPU refusal, the sandbox preflight, no secret on any command line, the status page.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from tests.paths import REPO

ROOT = REPO
START = ROOT / "space_app" / "start.sh"
FAKE_TOKEN = "hf_FAKEtokenForStartSh0123456789"
FAKE_GATE_SECRET = "gate-secret-FAKE-0123456789"

VLLM_STANDIN = """
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
log = os.environ["STANDIN_LOG"]
argv = sys.argv[1:]
record = {"argv": argv, "t": time.time(), "pid": os.getpid(),
          "env": {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "VLLM_SERVER_DEV_MODE")}}
with open(os.path.join(log, "vllm.json"), "w") as fh:
    json.dump(record, fh)
mode = os.environ.get("STANDIN_VLLM_MODE", "ok")
if mode == "crash":
    sys.exit(3)
if mode == "never":
    time.sleep(600)
port = int(argv[argv.index("--port") + 1])
class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
time.sleep(float(os.environ.get("STANDIN_VLLM_LOAD_S", "0.5")))
server = HTTPServer(("127.0.0.1", port), Health)
with open(os.path.join(log, "vllm_healthy.json"), "w") as fh:
    json.dump({"t": time.time()}, fh)
if mode == "die":
    server.timeout = 0.1
    end = time.time() + float(os.environ.get("STANDIN_VLLM_LIFETIME_S", "1.5"))
    while time.time() < end:
        server.handle_request()
    sys.exit(7)
server.serve_forever()
"""

ACCELERATE_STANDIN = """
import json, os, sys, time
log = os.environ["STANDIN_LOG"]
record = {"argv": sys.argv[1:], "t": time.time(), "pid": os.getpid(),
          "env": {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "HF_TOKEN", "INTERCEPT_RL_GATE_SECRET")}}
with open(os.path.join(log, "accelerate.json"), "w") as fh:
    json.dump(record, fh)
print("[intercept-rl] step 1/2 reward=0.5 ratio=1 kl=0", flush=True)
time.sleep(float(os.environ.get("STANDIN_TRAIN_S", "0.5")))
print("[intercept-rl] step 2/2 reward=0.75 ratio=1 kl=0.001", flush=True)
sys.exit(int(os.environ.get("STANDIN_TRAIN_RC", "0")))
"""

NVIDIA_SMI_STANDIN = """
import os, sys
with open(os.path.join(os.environ["STANDIN_LOG"], "nvidia-smi.json"), "w") as fh:
    fh.write(repr(sys.argv[1:]))
for index in filter(None, os.environ.get("STANDIN_GPUS", "0,1,2,3").split(",")):
    print(index)
"""

BWRAP_STANDIN = """
import os, sys
sys.exit(0 if os.environ.get("STANDIN_BWRAP_WORKS", "1") == "1" else 1)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_standin(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)


@pytest.fixture
def space(tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    for name, body in (("vllm", VLLM_STANDIN), ("accelerate", ACCELERATE_STANDIN),
                       ("nvidia-smi", NVIDIA_SMI_STANDIN), ("bwrap", BWRAP_STANDIN)):
        write_standin(bin_dir, name, body)
    ports = {"PORT": free_port(), "INTERCEPT_RL_VLLM_PORT": free_port()}
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "APP_DIR": str(ROOT),
        "INTERCEPT_RL_PYTHON": sys.executable,
        "INTERCEPT_RL_MODEL": "some-org/some-model",
        "INTERCEPT_RL_MAX_MODEL_LEN": "4096",
        "INTERCEPT_RL_STATE_DIR": str(tmp_path / "state"),
        "INTERCEPT_RL_OUTPUT_DIR": str(tmp_path / "out"),
        "INTERCEPT_RL_POLL_S": "0.2",
        "INTERCEPT_RL_KEEP_SERVING": "0",
        "INTERCEPT_RL_VLLM_HEALTH_TIMEOUT_S": "60",
        "INTERCEPT_RL_TRAIN_ARGS": "--max-steps 2 --num-generations 4",
        "HF_TOKEN": FAKE_TOKEN,
        "INTERCEPT_RL_GATE_SECRET": FAKE_GATE_SECRET,
        "SPACE_HOST": "someone-test.hf.space",
        "STANDIN_LOG": str(log),
        **{k: str(v) for k, v in ports.items()},
    }

    class Space:
        def __init__(self):
            self.env, self.log, self.tmp, self.ports = env, log, tmp_path, ports

        def run(self, timeout=90, **extra) -> subprocess.CompletedProcess:
            return subprocess.run(["bash", str(START)], env={**self.env, **extra}, capture_output=True, text=True,
                                  timeout=timeout)

        def popen(self, **extra) -> subprocess.Popen:
            return subprocess.Popen(["bash", str(START)], env={**self.env, **extra}, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)

        def record(self, name) -> dict | None:
            path = self.log / f"{name}.json"
            return json.loads(path.read_text()) if path.exists() else None

        def state(self) -> tuple[str, str]:
            state_dir = self.tmp / "state"
            return (state_dir / "state").read_text().strip(), (state_dir / "detail").read_text().strip()

    return Space()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_dead(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_vllm_first_with_training_flags_then_trainer_on_the_other_gpus(space):
    proc = space.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    vllm, healthy, trainer = space.record("vllm"), space.record("vllm_healthy"), space.record("accelerate")
    port = str(space.ports["INTERCEPT_RL_VLLM_PORT"])
    assert vllm["argv"] == [
        "serve", "some-org/some-model", "--served-model-name", "policy",
        "--weight-transfer-config", '{"backend":"nccl"}', "--logprobs-mode", "processed_logprobs",
        "--max-model-len", "4096", "--dtype", "bfloat16", "--host", "127.0.0.1", "--port", port]
    assert vllm["env"] == {"CUDA_VISIBLE_DEVICES": "0", "VLLM_SERVER_DEV_MODE": "1"}
    # the same flags as the project's own vLLM launch line (trainer/vllm_weight_sync.py)
    from trainer.vllm_weight_sync import vllm_serve_command

    line = vllm_serve_command("some-org/some-model", "policy", 4096, "bfloat16", port=int(port))
    assert line.startswith("VLLM_SERVER_DEV_MODE=1 vllm serve ")
    flags = {flag for flag in line.split() if flag.startswith("--")} - {"--tensor-parallel-size"}
    assert flags <= set(vllm["argv"]), flags - set(vllm["argv"])
    # order: vLLM started, became healthy, and only then the trainer
    assert vllm["t"] < healthy["t"] < trainer["t"]
    assert trainer["argv"] == [
        "launch", "--config_file", str(ROOT / "trainer" / "accelerate_fsdp2.yaml"), "--num_processes", "3",
        "trainer/train_swe_async_grpo.py", "--model-name-or-path", "some-org/some-model",
        "--vllm-url", f"http://127.0.0.1:{port}", "--served-model-name", "policy", "--gate-port", "8001",
        "--dtype", "bfloat16",
        "--output-dir", str(space.tmp / "out"), "--project", "intercept-rl", "--max-steps", "2",
        "--num-generations", "4"]
    assert trainer["env"]["CUDA_VISIBLE_DEVICES"] == "1,2,3"
    # secrets reach the trainer through its environment only, never a command line or the logs
    assert trainer["env"]["HF_TOKEN"] == FAKE_TOKEN and trainer["env"]["INTERCEPT_RL_GATE_SECRET"] == FAKE_GATE_SECRET
    for secret in (FAKE_TOKEN, FAKE_GATE_SECRET):
        assert secret not in json.dumps([vllm["argv"], trainer["argv"]])
        assert secret not in proc.stdout + proc.stderr
        assert secret not in (space.tmp / "state" / "train.log").read_text()
    assert space.state()[0] == "finished"
    assert wait_dead(vllm["pid"]), "vLLM must be stopped when training ends"


def test_two_gpus_and_trackio_space_and_vllm_extra_flags(space):
    proc = space.run(STANDIN_GPUS="4,5", INTERCEPT_RL_TRACKIO_SPACE_ID="someone/dash",
                     INTERCEPT_RL_VLLM_EXTRA_ARGS="--enforce-eager --gpu-memory-utilization 0.8",
                     INTERCEPT_RL_DTYPE="float16", INTERCEPT_RL_TRAIN_ARGS="")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    vllm, trainer = space.record("vllm"), space.record("accelerate")
    assert vllm["env"]["CUDA_VISIBLE_DEVICES"] == "4" and trainer["env"]["CUDA_VISIBLE_DEVICES"] == "5"
    assert vllm["argv"][-3:] == ["--enforce-eager", "--gpu-memory-utilization", "0.8"]
    assert vllm["argv"][vllm["argv"].index("--dtype") + 1] == "float16"
    argv = trainer["argv"]
    assert argv[argv.index("--num_processes") + 1] == "1"
    assert argv[argv.index("--dtype") + 1] == "float16"
    assert argv[-2:] == ["--trackio-space-id", "someone/dash"]


def test_health_wait_times_out_and_nothing_else_starts(space):
    start = time.monotonic()
    proc = space.run(STANDIN_VLLM_MODE="never", INTERCEPT_RL_VLLM_HEALTH_TIMEOUT_S="2")
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 2 <= elapsed < 30
    assert space.state() == ("failed", "vLLM was not healthy after 2 s")
    assert space.record("accelerate") is None
    assert wait_dead(space.record("vllm")["pid"]), "the unhealthy vLLM must be stopped"


def test_vllm_crashing_at_start_fails_the_space(space):
    proc = space.run(STANDIN_VLLM_MODE="crash")
    assert proc.returncode == 1
    assert space.state() == ("failed", "vLLM exited (status 3) before it was healthy")
    assert space.record("accelerate") is None


def test_vllm_dying_during_training_stops_the_trainer_and_exits_nonzero(space):
    start = time.monotonic()
    proc = space.run(STANDIN_VLLM_MODE="die", STANDIN_VLLM_LIFETIME_S="1.5", STANDIN_TRAIN_S="60")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert time.monotonic() - start < 40  # the 60 s trainer was not waited for
    state, detail = space.state()
    assert state == "failed" and detail.startswith("vLLM died during training (status 7)")
    assert wait_dead(space.record("accelerate")["pid"]), "the trainer must be stopped"


def test_trainer_failure_is_the_exit_status(space):
    proc = space.run(STANDIN_TRAIN_RC="5")
    assert proc.returncode == 5
    assert space.state() == ("failed", "the trainer exited with status 5")
    assert wait_dead(space.record("vllm")["pid"])


def test_one_gpu_is_refused_with_the_reason(space):
    proc = space.run(STANDIN_GPUS="0")
    assert proc.returncode == 1
    state, detail = space.state()
    assert state == "failed" and "one GPU" in detail and "NCCL" in detail
    assert space.record("vllm") is None


def test_no_gpu_is_refused(space):
    proc = space.run(STANDIN_GPUS="")
    assert proc.returncode == 1 and "no GPU" in space.state()[1]


def test_without_bubblewrap_it_refuses_unless_allowed_loudly(space):
    proc = space.run(STANDIN_BWRAP_WORKS="0")
    assert proc.returncode == 1
    assert space.state()[0] == "refused"
    assert "REFUSING" in proc.stdout + proc.stderr
    assert space.record("vllm") is None and space.record("accelerate") is None
    proc = space.run(STANDIN_BWRAP_WORKS="0", INTERCEPT_RL_ALLOW_UNSANDBOXED="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WITHOUT a sandbox" in proc.stdout + proc.stderr


def test_missing_model_is_a_clear_failure(space):
    proc = space.run(INTERCEPT_RL_MODEL="")
    assert proc.returncode == 1 and "INTERCEPT_RL_MODEL" in space.state()[1]


def test_status_page_serves_state_step_reward_and_stops_on_sigterm(space):
    proc = space.popen(INTERCEPT_RL_KEEP_SERVING="1", INTERCEPT_RL_TRACKIO_SPACE_ID="someone/dash")
    try:
        url = f"http://127.0.0.1:{space.ports['PORT']}"
        status, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as response:
                    status = json.loads(response.read())
                if status["state"] == "finished":
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert status and status["state"] == "finished", status
        assert status["step"] == 2 and status["max_steps"] == 2 and status["reward"] == 0.75
        assert status["trackio"]["url"] == "https://huggingface.co/spaces/someone/dash"
        with urllib.request.urlopen(url + "/", timeout=5) as response:
            page = response.read().decode()
        assert "finished" in page and "0.75" in page and "someone/dash" in page
        assert FAKE_TOKEN not in page and FAKE_GATE_SECRET not in page
        assert proc.poll() is None  # keeps serving after training
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 143, output
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/healthz", timeout=2)


def test_the_trainer_accepts_every_flag_start_sh_passes(space):
    """start.sh's trainer command line parses with `intercept-rl train`'s own parser (no unknown flag)."""
    proc = space.run(INTERCEPT_RL_TRACKIO_SPACE_ID="someone/dash")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    argv = space.record("accelerate")["argv"]
    script_args = argv[argv.index("trainer/train_swe_async_grpo.py") + 1:]
    from trainer.config import parse_train_args

    script, training = parse_train_args(script_args)
    assert script.model_name_or_path == "some-org/some-model"
    assert script.vllm_url == f"http://127.0.0.1:{space.ports['INTERCEPT_RL_VLLM_PORT']}"
    assert training.dtype == "bfloat16" and training.output_dir == str(space.tmp / "out")
    assert training.trackio_space_id == "someone/dash" and training.max_steps == 2
