"""The checks `intercept-rl doctor` runs: one function per thing the system relies on.

Each check returns a `CheckResult`: a status, one line of detail and, when it is not OK, the remedy a user can
type. A check never raises and every probe has a timeout, so one broken part cannot hide the others.
"""

from __future__ import annotations

import enum
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import locks

ROOT = locks.PROJECT_ROOT
MIN_NODE = (20, 6)  # pi needs >= 20.6 (design §7)
MIN_FREE_GB = 5.0
# TRL 1.16's vLLM support window (design §5); outside it TRL's client and weight-transfer calls do not match.
VLLM_SUPPORTED = ((0, 22, 0), (0, 31, 99))
VLLM_TRAINING_FLAGS = ("VLLM_SERVER_DEV_MODE=1 vllm serve MODEL --served-model-name NAME "
                       "--weight-transfer-config '{\"backend\":\"nccl\"}' --logprobs-mode processed_logprobs "
                       "--max-model-len L --dtype <the trainer's dtype>")


class Status(enum.StrEnum):
    """A check's verdict; any FAIL makes `intercept-rl doctor` exit non-zero."""

    OK = "ok"
    WARN = "warn"  # missing but optional for what was asked (e.g. an agent you may not use)
    FAIL = "FAIL"  # required and missing or broken: doctor exits non-zero


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: one line with its detail, and the remedy when it is not OK."""

    name: str
    status: Status
    detail: str
    remedy: str = ""

    def line(self) -> str:
        text = f"{self.status.value:<4} {self.name}: {self.detail}"
        return f"{text}  -> {self.remedy}" if self.remedy and self.status is not Status.OK else text


def _run(argv: list[str], timeout: float = 30, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def check_python() -> CheckResult:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < (3, 11):
        return CheckResult("python", Status.FAIL, f"{version} (< 3.11)", "use Python >= 3.11 (PYTHON=python3.11 make)")
    return CheckResult("python", Status.OK, f"{version} at {sys.executable}")


def check_bubblewrap() -> list[CheckResult]:
    """bubblewrap must start a sandbox with every namespace unshared, as this user and (when root) as nobody."""
    remedy = "apt-get install bubblewrap (or run scripts/bootstrap.sh)"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return [CheckResult("bubblewrap", Status.FAIL, "bwrap not found on PATH", remedy)]
    probe = [bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
             "--tmpfs", "/tmp", "true"]
    results = []
    users = [("as this user", [])]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv:
            users.append(("unprivileged (nobody)",
                          [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]))
    for label, prefix in users:
        try:
            proc = _run(prefix + probe, timeout=20)
            ok, why = proc.returncode == 0, _first_line(proc.stderr)
        except (OSError, subprocess.TimeoutExpired) as exc:
            ok, why = False, str(exc)
        results.append(CheckResult(f"bubblewrap {label}", Status.OK if ok else Status.FAIL,
                                   bwrap if ok else f"sandbox did not start: {why}",
                                   "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)"
                                   " or run in a container that permits them"))
    return results


def check_docker(required: bool) -> CheckResult:
    status = Status.FAIL if required else Status.WARN
    remedy = "start a Docker daemon (`systemctl start docker`, or `dockerd` as root) or drop --docker"
    docker = shutil.which("docker")
    if docker is None:
        return CheckResult("docker", status, "docker CLI not found", "apt-get install docker.io")
    try:
        proc = _run([docker, "version", "--format", "{{.Server.Version}}"], timeout=15)
    except subprocess.TimeoutExpired:
        return CheckResult("docker", status, "daemon did not answer within 15 s", remedy)
    if proc.returncode != 0:
        return CheckResult("docker", status, f"no daemon answers: {_first_line(proc.stderr)}", remedy)
    return CheckResult("docker", Status.OK, f"daemon {proc.stdout.strip()}")


def check_node() -> CheckResult:
    remedy = "install Node >= 20.6 (apt-get install nodejs npm) for the npm agents (pi, ...)"
    node = shutil.which("node")
    if node is None:
        return CheckResult("node", Status.WARN, "node not found (the npm agents cannot run)", remedy)
    proc = _run([node, "--version"], timeout=15)
    match = re.match(r"v(\d+)\.(\d+)", proc.stdout.strip())
    if not match or tuple(map(int, match.groups())) < MIN_NODE:
        return CheckResult("node", Status.WARN, f"{proc.stdout.strip() or 'unknown version'} (< 20.6)", remedy)
    return CheckResult("node", Status.OK, proc.stdout.strip())


def _drift_result(name: str, drift: locks.Drift, remedy: str) -> CheckResult:
    if not drift:
        return CheckResult(name, Status.OK, "matches its lock")
    lines = drift.lines()
    more = f" (+{len(lines) - 3} more)" if len(lines) > 3 else ""
    return CheckResult(name, Status.FAIL, "; ".join(lines[:3]) + more, remedy)


def check_project_venv() -> CheckResult:
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        return CheckResult("project venv", Status.FAIL, f"{python} missing", "make setup")
    try:
        drift = locks.pip_environment_drift(".venv", python, locks.LOCKS / "project.txt")
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        return CheckResult("project venv", Status.FAIL, str(exc), "make setup")
    return _drift_result("project venv", drift, "make setup (reinstalls from locks/project.txt)")


def check_agents() -> list[CheckResult]:
    """The shipped agents, each against its lock; optional (a user may bring only `cmd:` agents)."""
    results = []
    python = ROOT / ".venv-agents" / "bin" / "python"
    if not python.exists():
        results.append(CheckResult("mini-swe-agent", Status.WARN, "not installed (.venv-agents missing)", "make setup"))
    else:
        try:
            drift = locks.pip_environment_drift(".venv-agents", python, locks.LOCKS / "agents.txt")
            version = locks.installed_in(python).get("mini-swe-agent", "?")
            result = _drift_result("mini-swe-agent", drift, "make setup (reinstalls from locks/agents.txt)")
            results.append(result if drift else CheckResult("mini-swe-agent", Status.OK,
                                                            f"{version}, venv matches locks/agents.txt"))
        except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
            results.append(CheckResult("mini-swe-agent", Status.FAIL, str(exc), "make setup"))
    for lock_dir in sorted((locks.LOCKS / "npm").iterdir()):
        name, prefix = lock_dir.name, ROOT / ".agents" / lock_dir.name
        if not (prefix / "node_modules").is_dir():
            results.append(CheckResult(name, Status.WARN, f"not installed ({prefix} missing)", "make setup"))
            continue
        drift = locks.npm_environment_drift(name, prefix, lock_dir / "package-lock.json")
        declared = json.loads((lock_dir / "package.json").read_text())["dependencies"]
        detail = ", ".join(f"{pkg}@{version}" for pkg, version in declared.items())
        results.append(_drift_result(name, drift, "make setup") if drift
                       else CheckResult(name, Status.OK, f"{detail}, node_modules matches its package-lock.json"))
    return results


def check_chromium() -> CheckResult:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return CheckResult("chromium", Status.WARN, "not found (the dashboard and trace-viewer tests need it)",
                           "apt-get install chromium")
    proc = _run([chromium, "--version"], timeout=30)
    return CheckResult("chromium", Status.OK, proc.stdout.strip() or chromium)


def check_embedded_model() -> CheckResult:
    """Build/load the tiny model and the Qwen3 tokenizer with the Hub switched off, in the project venv."""
    python = ROOT / ".venv" / "bin" / "python"
    code = ("from local_engine.embedded import ensure_tiny_model; from intercept_common.qwen3_tokenizer import "
            "load_qwen3_tokenizer; import transformers as t; p = ensure_tiny_model(); tok = load_qwen3_tokenizer(); "
            "m = t.AutoModelForCausalLM.from_pretrained(p); print(p, len(tok), m.num_parameters())")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    try:
        proc = _run([str(python if python.exists() else sys.executable), "-c", code], timeout=300, env=env)
    except subprocess.TimeoutExpired:
        return CheckResult("embedded model", Status.FAIL, "did not load within 300 s", "make setup")
    if proc.returncode != 0:
        return CheckResult("embedded model", Status.FAIL, f"offline load failed: {_first_line(proc.stderr)}",
                           "make setup; check INTERCEPT_RL_CACHE is writable")
    path, vocab, params = proc.stdout.split()[-3:]
    return CheckResult("embedded model", Status.OK, f"loads offline ({params} parameters, tokenizer {vocab} ids)")


def check_disk(path: Path = ROOT) -> CheckResult:
    free_gb = shutil.disk_usage(path).free / 1e9
    if free_gb < MIN_FREE_GB:
        return CheckResult("disk", Status.FAIL, f"{free_gb:.1f} GB free at {path} (< {MIN_FREE_GB:.0f} GB)",
                           "free space: venvs, agents and containers need several GB")
    return CheckResult("disk", Status.OK, f"{free_gb:.0f} GB free at {path}")


def check_gpu() -> list[CheckResult]:
    """CUDA visible to torch, vLLM inside TRL's supported window, and the serve flags training needs."""
    code = ("import json, torch, importlib.metadata as m\n"
            "try: v = m.version('vllm')\nexcept m.PackageNotFoundError: v = None\n"
            "n = torch.cuda.device_count() if torch.cuda.is_available() else 0\n"
            "print(json.dumps({'torch': torch.__version__, 'gpus': n, 'vllm': v,"
            " 'names': [torch.cuda.get_device_name(i) for i in range(n)]}))")
    try:
        proc = _run([sys.executable, "-c", code], timeout=120)
        info = json.loads(proc.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError):
        return [CheckResult("cuda", Status.FAIL, "could not query torch for CUDA", "install torch with CUDA")]
    results = []
    if info["gpus"]:
        results.append(CheckResult("cuda", Status.OK, f"{info['gpus']} GPU(s): {', '.join(info['names'])}; "
                                                      f"torch {info['torch']}"))
    else:
        results.append(CheckResult("cuda", Status.FAIL, f"torch {info['torch']} sees no GPU",
                                   "install your CUDA build of torch before `make setup` (see README: GPU)"))
    vllm = info["vllm"]
    if vllm is None:
        results.append(CheckResult("vllm", Status.FAIL, "not installed", "pip install 'vllm==0.26.0'"))
    else:
        numbers = tuple(int(x) for x in re.findall(r"\d+", vllm)[:3])
        low, high = VLLM_SUPPORTED
        inside = low <= numbers <= high
        results.append(CheckResult("vllm", Status.OK if inside else Status.FAIL,
                                   f"{vllm} ({'inside' if inside else 'outside'} TRL 1.16's 0.22-0.31)",
                                   "pip install 'vllm==0.26.0'"))
    results.append(CheckResult("vllm flags", Status.OK, f"serve with: {VLLM_TRAINING_FLAGS}"))
    return results


def run_all(*, docker: bool = False, gpu: bool = False) -> list[CheckResult]:
    results = [check_python(), *check_bubblewrap(), check_project_venv(), check_embedded_model(), check_disk(),
               check_node(), *check_agents(), check_chromium(), check_docker(required=docker)]
    if gpu:
        results += check_gpu()
    return results
