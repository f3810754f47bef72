"""The trainer side: argument parsing (presets, --config, validation), the builder with an injected worker, and a real
CPU training run (TRL 1.16 AsyncGRPOTrainer, tiny Qwen3, real local engine) for F1 and Trackio."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from intercept_common.errors import ConfigError
from tests.paths import REPO
from trainer import modes
from trainer.config import (
    DEFAULT_LORA_TARGETS,
    PRESETS,
    SweTrainArguments,
    early_trackio_dir,
    make_parser,
    parse_train_args,
    peft_config_from,
    trackio_dir_for,
)
from trainer.checkpoints import WORKER_STATE_FILE, WorkerStateCallback, load_worker_state, resolve_checkpoint
from trainer.train_swe_async_grpo import dashboard_command, main

# ---------------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------------


def test_help_documents_every_option_the_issue_names():
    text = make_parser().format_help()
    for flag in ("--preset", "--model-name-or-path", "--vllm-url", "--served-model-name", "--tasks", "--agent",
                 "--sandbox", "--num-generations", "--max-inflight", "--learning-rate", "--epsilon", "--epsilon-high",
                 "--temperature", "--max-completion-length", "--max-staleness", "--weight-sync-steps",
                 "--token-budget", "--use-peft", "--lora-r", "--lora-alpha", "--lora-target-modules", "--dtype",
                 "--bf16", "--gradient-checkpointing", "--output-dir", "--save-steps", "--resume-from-checkpoint",
                 "--report-to", "--project", "--trackio-space-id", "--seed", "--max-steps", "--tree-attention",
                 "--config"):
        assert flag in text, flag


def test_preset_sets_defaults_and_flags_override_them():
    script, training = parse_train_args(["--preset", "cpu-demo", "--learning-rate", "0.5", "--agent", "pi"])
    demo = PRESETS["cpu-demo"]
    assert script.model_name_or_path == "embedded" and script.task_options.tasks == "embedded"
    assert script.episode_options.sandbox == "local"
    assert script.episode_options.agent == "pi"  # flag beats preset
    assert training.learning_rate == 0.5
    assert training.max_steps == demo["max_steps"] and training.num_generations == demo["num_generations"]
    assert training.token_budget == 0 and training.per_device_train_batch_size == 2
    assert training.report_to == ["trackio"]
    assert training.dtype == "float32" and training.bf16 is False
    assert script.vllm_url is None


def test_config_file_beats_preset_and_flags_beat_config(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("preset: cpu-demo\nlearning_rate: 0.25\nmax_turns: 7\nuse_peft: true\nlora_r: 4\n"
                      "output_dir: " + str(tmp_path / "from-yaml") + "\n")
    script, training = parse_train_args(["--config", str(config), "--max-turns", "9"])
    assert script.preset == "cpu-demo" and script.model_name_or_path == "embedded"  # preset named in the file
    assert training.learning_rate == 0.25 and script.worker.max_turns == 9
    lora = peft_config_from(script)
    assert lora.r == 4 and set(lora.target_modules) == set(DEFAULT_LORA_TARGETS) and lora.lora_dropout == 0.0
    # The early (pre-import) trackio directory agrees with the parsed one.
    assert early_trackio_dir(["--config", str(config), "--max-turns", "9"]) == trackio_dir_for(script, training)
    assert trackio_dir_for(script, training) == str(tmp_path / "from-yaml" / "trackio")


def test_nested_config_sections_reach_the_config_that_owns_each_knob(tmp_path):
    """mini-swe-agent-style YAML: sections by owner, `sandbox: {backend, ...}` and `agent: {name}` select parts."""
    config = tmp_path / "run.yaml"
    config.write_text("preset: cpu-demo\nworker: {max_turns: 5, max_inflight: 3}\nepisode: {agent_wall_time_s: 77}\n"
                      "grading: {reward_mode: fraction}\nsandbox: {backend: docker, mem_limit: 4g}\nagent: {name: pi}\n"
                      "learning_rate: 0.125\n")
    script, training = parse_train_args(["--config", str(config), "--max-inflight", "1"])
    assert (script.worker.max_turns, script.worker.max_inflight) == (5, 1)  # the flag beats the file
    assert script.episode.agent_wall_time_s == 77 and script.grading.reward_mode == "fraction"
    assert script.episode_options.sandbox == "docker" and script.episode_options.sandbox_options == {"mem_limit": "4g"}
    assert script.episode_options.agent == "pi" and training.learning_rate == 0.125


def test_config_file_errors_name_the_problem(tmp_path):
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("preset: cpu-demo\nworker: {max_turnz: 5}\n")
    with pytest.raises(ValueError, match="unknown option 'max_turnz'"):
        parse_train_args(["--config", str(bad_key)])
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        parse_train_args(["--config", str(not_mapping), "--preset", "cpu-demo"])
    with pytest.raises(ValueError, match="does not exist"):
        parse_train_args(["--config", str(tmp_path / "missing.yaml")])


def test_every_preset_key_is_an_option_of_some_config():
    """A preset key no dataclass owns would be silently ignored by argparse: keep them all real."""
    known = {f.name for dtype in make_parser().dataclass_types for f in dataclasses.fields(dtype)}
    for name, preset in PRESETS.items():
        assert set(preset) <= known, (name, set(preset) - known)


def test_each_knob_has_one_definition():
    """No option name is defined by two of the dataclasses `train` parses (argparse would refuse it anyway), and
    the knobs merged into one definition are where the issue says."""
    names = [f.name for dtype in make_parser().dataclass_types for f in dataclasses.fields(dtype)]
    assert len(names) == len(set(names))
    for knob in ("agent_wall_time_s", "max_inflight", "max_turns", "reward_mode", "served_model_name", "agent"):
        assert names.count(knob) == 1, knob


def test_help_shows_our_options_grouped_and_no_warnings():
    proc = subprocess.run([sys.executable, "-m", "intercept_rl_cli", "train", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "Warning" not in proc.stdout + proc.stderr
    for group in ("Model, engine, gate, LoRA", "Tasks", "Agent and sandbox", "Worker: groups", "Episode:", "Grading:"):
        assert group in proc.stdout, group
    # Ours only (TRL's and transformers' ~900 lines are behind --help-all).
    assert "--help-all" in proc.stdout and "--learning_rate" not in proc.stdout and "--adam_beta1" not in proc.stdout
    full = subprocess.run([sys.executable, "-m", "intercept_rl_cli", "train", "--help-all"], capture_output=True,
                          text=True, timeout=120)
    assert full.returncode == 0 and "--learning-rate" in full.stdout and "--max-turns" in full.stdout


def test_early_trackio_dir_follows_flags_then_preset(tmp_path):
    assert early_trackio_dir(["--preset", "cpu-demo"]) == os.path.abspath("runs/cpu-demo/trackio")
    assert early_trackio_dir(["--preset", "cpu-demo", "--output-dir", str(tmp_path)]) == str(tmp_path / "trackio")
    assert early_trackio_dir(["--trackio_dir", str(tmp_path / "t"), "--output_dir", "x"]) == str(tmp_path / "t")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-steps", "3"], "--model-name-or-path is required"),
        (["--preset", "cpu-demo", "--max-steps", "0"], "--max-steps must be > 0"),
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--preset", "cpu-demo", "--use-peft", "--lora-target-modules", "lm_head"], "must not include lm_head"),
        (["--preset", "cpu-demo", "--tree-attention", "fa9"], "--tree-attention: invalid choice: 'fa9'"),
        (["--preset", "cpu-demo", "--vllm-weight-sync", "pigeon"], "--vllm-weight-sync: invalid choice: 'pigeon'"),
    ],
)
def test_bad_arguments_are_clear_errors(argv, message, capsys):
    with pytest.raises(ValueError, match=message):
        parse_train_args(argv)
    assert main(argv) == 2
    assert message.split("'")[0] in capsys.readouterr().err


@pytest.mark.parametrize(("key", "good", "bad", "allowed"),
                         [("tree_attention", "kernel", "fa9", "auto, torch, kernel"),
                          ("vllm_weight_sync", "disk", "pigeon", "nccl, ipc, disk, lora"),
                          ("off_policy_correction", "tis", "icepop2", "none, tis, mis-token, mis-seq, decoupled")])
def test_choice_options_are_enums_and_a_config_file_value_is_checked_under_its_key(key, good, bad, allowed, tmp_path):
    """A flag is checked by argparse's choices (above); a config file's value by the field's enum, named by its key."""
    enum_type = getattr(modes, {f.name: f.type for f in dataclasses.fields(SweTrainArguments)}[key])
    assert issubclass(enum_type, enum.StrEnum) and ", ".join(enum_type) == allowed
    config = tmp_path / "c.yaml"
    argv = ["--preset", "cpu-demo", "--vllm-url", "http://127.0.0.1:9", "--config", str(config)]
    config.write_text(f"{key}: {good}\n")
    assert getattr(parse_train_args(argv)[0], key) is enum_type(good)
    config.write_text(f"{key}: {bad}\n")
    with pytest.raises(ConfigError, match=f"^{key} must be one of {allowed}; got '{bad}'$"):
        parse_train_args(argv)


@pytest.mark.parametrize("how", ["flag", "last flag", "config file"])
def test_an_unknown_preset_is_refused_before_trl_is_imported(how, tmp_path):
    """One check of the preset's name, on the raw argv: before the Trackio directory is chosen and before the parser
    (which imports TRL, seconds) is built. Of two `--preset` flags the last counts, as argparse reads them."""
    argv = ["--preset", "nope"] if how == "flag" else ["--preset", "cpu-demo", "--preset=nope"]
    if how == "config file":
        (tmp_path / "c.yaml").write_text("preset: nope\n")
        argv = ["--config", str(tmp_path / "c.yaml")]
    with pytest.raises(ConfigError, match="^unknown preset 'nope'; known: cpu-demo, learning-demo, mini-swe-warm$"):
        early_trackio_dir(argv)
    probe = ("import sys; from trainer.config import parse_train_args\n"
             f"try:\n    parse_train_args({argv!r})\nexcept ValueError as e:\n    print(e)\n"
             "print('trl' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.stdout.splitlines() == ["unknown preset 'nope'; known: cpu-demo, learning-demo, mini-swe-warm", "False"], proc.stderr


def test_token_budget_defaults_to_the_local_engine_context_but_not_with_vllm():
    script, training = parse_train_args(["--model-name-or-path", "m", "--max-steps", "1", "--max-model-len", "2048"])
    assert training.token_budget == 2048
    script, training = parse_train_args(["--model-name-or-path", "m", "--max-steps", "1",
                                         "--vllm-url", "http://x:8000"])
    assert training.token_budget is None  # TRL asks vLLM's /v1/models for max_model_len


def test_a_trackio_space_is_private_unless_asked_otherwise():
    _, training = parse_train_args(["--preset", "cpu-demo", "--trackio-space-id", "me/dash"])
    assert training.hub_private_repo is True
    _, training = parse_train_args(["--preset", "cpu-demo", "--trackio-space-id", "me/dash",
                                    "--hub-private-repo", "false"])
    assert training.hub_private_repo is False


def test_dashboard_command():
    expected = "GRADIO_SERVER_PORT=7861 TRACKIO_DIR=/r/trackio trackio show --project p"
    assert dashboard_command("/r/trackio", "p") == expected


def test_resolve_checkpoint(tmp_path):
    assert resolve_checkpoint(None, str(tmp_path)) is None
    assert resolve_checkpoint("false", str(tmp_path)) is None
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_checkpoint("latest", str(tmp_path))
    for step in (2, 10):  # finished saves: transformers writes trainer_state.json last
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert resolve_checkpoint("true", str(tmp_path)) == str(tmp_path / "checkpoint-10")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        resolve_checkpoint(str(tmp_path / "missing"), str(tmp_path))


class _StatefulWorker:
    def __init__(self, position=0):
        self.position = position

    def state_dict(self):
        return {"position": self.position, "rng": [1, 2, 3]}

    def load_state_dict(self, state):
        self.position = state["position"]


def test_worker_state_rides_along_with_each_checkpoint(tmp_path):
    callback = WorkerStateCallback(_StatefulWorker(position=17))
    state = SimpleNamespace(global_step=4, is_world_process_zero=True)
    callback.on_save(SimpleNamespace(output_dir=str(tmp_path)), state, None)
    saved = tmp_path / "checkpoint-4" / WORKER_STATE_FILE
    assert json.loads(saved.read_text()) == {"position": 17, "rng": [1, 2, 3]}
    restored = _StatefulWorker()
    assert load_worker_state(restored, str(tmp_path / "checkpoint-4"))
    assert restored.position == 17
    assert not load_worker_state(_StatefulWorker(), str(tmp_path))  # no state file: warn, start over


def test_build_trainer_refuses_a_local_run_without_weight_transfer():
    from trainer.train_swe_async_grpo import TrainArgs, build_trainer

    script, training = parse_train_args(["--model-name-or-path", "m", "--max-steps", "1"])
    with pytest.raises(ValueError, match="weight_transfer is required"):
        build_trainer(TrainArgs(script, training), worker=_StatefulWorker(), weight_transfer=None)


# ---------------------------------------------------------------------------------------------------------------------
# A real CPU run, in a fresh process (trackio fixes its directory at import): F1 and Trackio
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    from intercept_common.engine_process import LocalEngineProcess
    from local_engine.embedded import ensure_tiny_model

    model_dir = ensure_tiny_model()
    out = tmp_path_factory.mktemp("run") / "out"
    argv = ["--model-name-or-path", str(model_dir), "--output-dir", str(out), "--max-steps", "3",
            "--save-steps", "2", "--token-budget", "128", "--num-generations", "4", "--learning-rate", "1e-3",
            "--temperature", "1.0", "--max-staleness", "2", "--dtype", "float32", "--bf16", "false",
            "--report-to", "trackio", "--project", "trainer-test", "--seed", "0"]
    # Like main(): trackio's directory is configured before anything (TRL, the helpers) imports trackio.
    code = ("import json, sys; from trainer.train_swe_async_grpo import configure_trackio; "
            "argv = json.loads(sys.argv[1]); configure_trackio(argv); "
            "from tests.trainer.test_trainer_helpers import run_training_with_test_worker; "
            "run_training_with_test_worker(argv, sys.argv[2])")
    env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("TRACKIO_DIR", None)
    with LocalEngineProcess(str(model_dir), served_model_name="policy", max_model_len=4096) as engine:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(argv), engine.url], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    history = json.loads((out / "log_history.json").read_text())
    return SimpleNamespace(out=out, history=history, stdout=proc.stdout)


@pytest.mark.slow
def test_f1_first_step_ratio_is_one_and_kl_zero(cpu_run):
    steps = [entry for entry in cpu_run.history if "ratio" in entry]
    assert [entry["step"] for entry in steps] == [1, 2, 3]
    first = steps[0]
    print(f"F1 step 1: ratio={first['ratio']!r} kl={first['kl']!r} loss={first.get('loss')!r}")
    assert abs(first["ratio"] - 1.0) <= 1e-5
    assert first["kl"] <= 1e-6
    assert first["batch/trained_tokens_per_step"] > 0
    # Real optimizer steps: later steps score samples against moved weights.
    assert any(abs(entry["ratio"] - 1.0) > 1e-5 or entry["kl"] > 1e-6 for entry in steps[1:])
    assert (cpu_run.out / "checkpoint-2" / "model.safetensors").is_file()
    assert json.loads((cpu_run.out / "checkpoint-2" / WORKER_STATE_FILE).read_text())["next_group"] >= 1


@pytest.mark.slow
def test_trackio_db_gets_the_metrics(cpu_run):
    db = cpu_run.out / "trackio" / "trainer-test.db"
    assert db.is_file(), list((cpu_run.out / "trackio").iterdir())
    with sqlite3.connect(db) as conn:
        rows = [(step, json.loads(metrics)) for step, metrics in
                conn.execute("SELECT step, metrics FROM metrics ORDER BY id")]
    logged = {key for _, metrics in rows for key in metrics}
    for key in ("train/ratio", "train/kl", "train/loss", "train/reward", "train/rollout/reward_mean"):
        assert key in logged, sorted(logged)
    ratios = [metrics["train/ratio"] for _, metrics in rows if "train/ratio" in metrics]
    assert len(ratios) == 3 and abs(ratios[0] - 1.0) <= 1e-5
    assert f"TRACKIO_DIR={cpu_run.out / 'trackio'} trackio show --project trainer-test" in cpu_run.stdout


@pytest.mark.slow
async def test_trackio_dashboard_shows_the_run_in_headless_chromium(cpu_run):
    """`trackio show` on the finished run's directory, opened in headless Chromium: the ratio, kl and loss charts
    list the run and have drawn data pixels in its colour."""
    import asyncio
    import shutil
    import signal
    import socket
    import urllib.request

    from tests.trainer.test_trainer_helpers import chart_pixels

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is installed by scripts/bootstrap.sh"
    with sqlite3.connect(cpu_run.out / "trackio" / "trainer-test.db") as conn:
        run_names = {name for (name,) in conn.execute("SELECT DISTINCT run_name FROM metrics")}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "TRACKIO_DIR": str(cpu_run.out / "trackio"),
           "BROWSER": "true", "GRADIO_ANALYTICS_ENABLED": "False"}
    trackio_bin = str(Path(sys.executable).parent / "trackio")
    server = subprocess.Popen([trackio_bin, "show", "--project", "trainer-test"], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/?project=trainer-test"
        for _ in range(120):
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                await asyncio.sleep(0.5)
        else:
            raise AssertionError("trackio show did not answer within 60 s")
        want = ("train/ratio", "train/kl", "train/loss")
        charts = await chart_pixels(url, chromium=chromium, want=want)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)
    by_metric = {chart["metric"]: chart for chart in charts}
    for metric in want:
        assert metric in by_metric, sorted(by_metric)
        assert set(by_metric[metric]["runs"]) & run_names, by_metric[metric]
        assert by_metric[metric]["data_pixels"] > 0, by_metric[metric]
