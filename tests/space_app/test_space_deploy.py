"""`intercept-rl space deploy`: the plan, the dry run through the real CLI, secrets never printed, --follow."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from space_app import deploy as dep
from tests.paths import REPO

ROOT = REPO
FAKE_TOKEN = "hf_FAKEtokenDoNotPrint0123456789abcdef"


def run_cli(*args: str, env_extra: dict[str, str] | None = None, tmp_path: Path) -> subprocess.CompletedProcess:
    """The real `intercept-rl` entry point (intercept_rl_cli.main) in a subprocess, with an isolated HF home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update({"HF_HOME": str(tmp_path / "hf-home"), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "intercept_rl_cli", "space", "deploy", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_dry_run_prints_private_plan_with_secret_names_hardware_and_uploads_never_the_token(tmp_path):
    proc = run_cli("--dry-run", "--space-id", "someone/test", env_extra={"HF_TOKEN": FAKE_TOKEN}, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "DRY RUN" in out
    assert "HfApi.create_repo(repo_id='someone/test', repo_type='space', space_sdk='docker', private=True" in out
    assert "Space someone/test: private" in out
    assert "HfApi.update_repo_settings(repo_id='someone/test', repo_type='space', private=True)" in out
    assert "secrets (values never printed): HF_TOKEN, INTERCEPT_RL_GATE_SECRET" in out
    assert "HfApi.add_space_secret(repo_id='someone/test', key='HF_TOKEN', value=<secret HF_TOKEN" in out
    assert "HfApi.request_space_hardware(repo_id='someone/test', hardware='l40sx4')" in out
    upload = out.split("upload list", 1)[1].splitlines()
    paths = {line.split()[0] for line in upload[1:] if line.startswith("  ")}
    for expected in ("Dockerfile", "README.md", "pyproject.toml", "intercept_rl_cli.py", "locks/project.txt",
                     "locks/agents.txt", "locks/npm/pi/package-lock.json", "space_app/start.sh",
                     "trainer/train_swe_async_grpo.py", "trainer/accelerate_fsdp2.yaml", "space_app/node-lock.txt"):
        assert expected in paths, expected
    assert not any(p.startswith((".venv", "tests/", ".git")) or "__pycache__" in p for p in paths)
    # the token appears nowhere: not in stdout, stderr, nor any file the run could have written
    assert FAKE_TOKEN not in out and FAKE_TOKEN not in proc.stderr
    assert FAKE_TOKEN[3:20] not in out + proc.stderr  # nor a fragment of it
    for path in (tmp_path / "hf-home").rglob("*") if (tmp_path / "hf-home").exists() else []:
        if path.is_file():
            assert FAKE_TOKEN not in path.read_text(errors="replace"), path


def test_dry_run_public_hardware_follow_and_options(tmp_path):
    proc = run_cli("--dry-run", "--follow", "--public", "--space-id", "someone/test", "--hardware", "a100x4",
                   "--model", "Qwen/Qwen3-4B", "--train-args", "--max-steps 5", "--trackio-space-id", "someone/dash",
                   env_extra={"HF_TOKEN": FAKE_TOKEN}, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "private=False" in proc.stdout and "PUBLIC" in proc.stdout and "WARNING: --public" in proc.stdout
    assert "hardware='a100x4'" in proc.stdout
    assert "key='INTERCEPT_RL_TRAIN_ARGS', value='--max-steps 5'" in proc.stdout
    assert "key='INTERCEPT_RL_TRACKIO_SPACE_ID', value='someone/dash'" in proc.stdout
    assert "HfApi.pause_space" in proc.stdout  # what --follow would do
    assert "HfApi.restart_space(repo_id='someone/test')    # only if HfApi.get_space_runtime says PAUSED" in proc.stdout
    assert FAKE_TOKEN not in proc.stdout + proc.stderr


def test_dry_run_without_any_token_still_plans_and_says_it_is_missing(tmp_path):
    proc = run_cli("--dry-run", "--space-id", "someone/test", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "MISSING: set HF_TOKEN" in proc.stdout


def test_options_come_from_a_config_file_by_section_and_flags_win(tmp_path):
    """`space deploy` reads the same config tree as every command: its options under `space:`, how it runs under
    `run:`; a key in the wrong section is refused naming both."""
    config = tmp_path / "space.yaml"
    config.write_text("space: {space_id: someone/test, public: true, hardware: a100x4}\nrun: {dry_run: true}\n")
    proc = run_cli("--config", str(config), "--hardware", "l4x1", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "private=False" in proc.stdout and "hardware='l4x1'" in proc.stdout
    config.write_text("space: {space_id: someone/test, dry_run: true}\n")
    proc = run_cli("--config", str(config), tmp_path=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "'dry_run' does not belong in section 'space'" in proc.stderr and "run" in proc.stderr


def test_bad_space_id_and_hardware_are_clear_errors(tmp_path):
    proc = run_cli("--dry-run", "--space-id", "no-owner", tmp_path=tmp_path)
    assert proc.returncode == 2 and "OWNER/NAME" in proc.stderr
    proc = run_cli("--dry-run", "--space-id", "someone/test", "--hardware", "gpu-9000", tmp_path=tmp_path)
    assert proc.returncode == 2 and "not a Space hardware" in proc.stderr


def test_space_is_registered_in_the_cli_help(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "intercept_rl_cli", "--help"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == 0 and "  space " in proc.stdout


class RecordingApi:
    """Stands in for HfApi: records every call (the real deploy path, minus the network)."""

    def __init__(self, stages=("BUILDING",), statuses=()):
        self.calls: list[tuple[str, dict]] = []
        self.stages = list(stages)
        self.statuses = list(statuses)
        self.variables: dict[str, object] = {}

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, kwargs if not args else {"args": args, **kwargs}))
            if name == "get_space_runtime":
                return SimpleNamespace(stage=self.stages.pop(0) if len(self.stages) > 1 else self.stages[0])
            if name == "get_space_variables":
                return dict(self.variables)
            return None
        return call


def test_real_deploy_runs_the_plan_in_order_with_secret_values_passed_only_to_the_api(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    api, out = RecordingApi(), io.StringIO()
    rc = dep.deploy(dep.DeployOptions(space_id="someone/test"), dry_run=False, follow_run=False, api=api, out=out)
    assert rc == 0
    names = [name for name, _ in api.calls]
    assert names[0] == "create_repo" and names[-2:] == ["create_commit", "get_space_runtime"]  # not PAUSED: no restart
    assert names.index("request_space_hardware") < names.index("create_commit")
    assert api.calls[0][1]["private"] is True
    assert api.calls[1] == ("update_repo_settings", {"repo_id": "someone/test", "repo_type": "space", "private": True})
    secrets_passed = {kw["key"]: kw["value"] for name, kw in api.calls if name == "add_space_secret"}
    assert secrets_passed["HF_TOKEN"] == FAKE_TOKEN
    gate = secrets_passed["INTERCEPT_RL_GATE_SECRET"]
    assert isinstance(gate, str) and len(gate) >= 40
    operations = api.calls[-2][1]["operations"]
    assert {op.path_in_repo for op in operations} >= {"Dockerfile", "README.md", "space_app/start.sh"}
    printed = out.getvalue()
    assert FAKE_TOKEN not in printed and gate not in printed


def test_a_space_that_paused_itself_is_restarted_after_the_upload(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    api = RecordingApi(stages=["PAUSED"])
    dep.deploy(dep.DeployOptions(space_id="someone/test"), dry_run=False, follow_run=False, api=api, out=io.StringIO())
    assert [name for name, _ in api.calls][-3:] == ["create_commit", "get_space_runtime", "restart_space"]


def test_variables_an_earlier_deploy_set_and_this_one_does_not_are_deleted(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    api = RecordingApi()
    api.variables = {"INTERCEPT_RL_ALLOW_UNSANDBOXED": "1", "INTERCEPT_RL_MODEL": "old", "OTHER_TOOL_VAR": "x"}
    dep.deploy(dep.DeployOptions(space_id="someone/test"), dry_run=False, follow_run=False, api=api, out=io.StringIO())
    deleted = [kw["key"] for name, kw in api.calls if name == "delete_space_variable"]
    assert deleted == ["INTERCEPT_RL_ALLOW_UNSANDBOXED"]  # ours and stale; the model is re-set, others untouched


def test_each_deploy_generates_a_fresh_gate_secret(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    values = []
    for _ in range(2):
        plan = dep.build_plan(dep.DeployOptions(space_id="someone/test"))
        values.append(next(c.kwargs["value"].value for c in plan.calls if c.kwargs.get("key") == dep.GATE_SECRET))
    assert values[0] != values[1]


def test_follow_pauses_when_training_finishes():
    api, lines = RecordingApi(stages=["PAUSED", "BUILDING", "RUNNING"]), []  # paused from an earlier run at first
    statuses = iter([None, {"state": "training", "step": 1, "max_steps": 2, "reward": 0.5},
                     {"state": "finished", "step": 2, "max_steps": 2, "reward": 0.75}])
    rc = dep.follow(api, "someone/test", log=lines.append, sleep=lambda s: None, status_fn=lambda: next(statuses))
    assert rc == 0
    assert api.calls[-1][0] == "pause_space"
    assert any("step=2" in line for line in lines) and "space someone/test: BUILDING" in lines


def test_follow_pauses_and_fails_on_a_runtime_error():
    api = RecordingApi(stages=["RUNTIME_ERROR"])
    rc = dep.follow(api, "someone/test", log=lambda _: None, sleep=lambda s: None, status_fn=lambda: None)
    assert rc == 1 and api.calls[-1][0] == "pause_space"


def test_secret_value_never_shows_in_repr():
    secret = dep.SecretValue("X", "origin", "super-secret-value")
    assert "super-secret-value" not in repr(secret) + str(secret) + repr(dep.ApiCall("m", {"value": secret}).render())


@pytest.mark.parametrize("name", ["Dockerfile", "README.md"])
def test_space_root_files_come_from_space_app(name):
    items = {item.path_in_repo: item.local_path for item in dep.upload_list()}
    assert items[name] == ROOT / "space_app" / name
