"""Every command rejects each invalid value its configs reject in one line, with a non-zero exit, no traceback, and
nothing started: no engine, no sandbox, no gate, no child process left (issue #23). The cases run through the real
dispatcher, one process per command (tests/support/cli_probe.py), so the heavy imports are paid once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.paths import REPO

pytestmark = pytest.mark.timeout(900)

# (extra argv, a word the one line must hold); a `yaml:` entry is written to a config file passed with --config.
GATE = [(["--max-body-bytes", "0"], "max_body_bytes"), (["--request-timeout-s", "0"], "request_timeout_s"),
        (["--body-timeout-s", "0"], "body_timeout_s"), (["--queue-timeout-s", "0"], "queue_timeout_s"),
        (["--keepalive-interval-s", "0"], "keepalive_interval_s"), (["--shutdown-timeout-s", "0"], "shutdown_timeout_s"),
        (["--max-pending-per-rollout", "0"], "max_pending_per_rollout"),
        (["--max-pending-total", "0"], "max_pending_total"), (["--rollout-requests-per-s", "0"], "rollout_requests_per_s"),
        (["--rollout-request-burst", "0"], "rollout_request_burst"), (["--stream-chunk-chars", "0"], "stream_chunk_chars")]
WORKER_OWN = [(["--max-inflight", "0"], "max_inflight"), (["--overlong-policy", "drop"], "overlong"),
              (["--budget-grace-s", "-1"], "budget_grace_s"), (["--max-tokens-per-turn", "0"], "max_tokens_per_turn"),
              (["--max-turns", "0"], "max_turns"), (["--cluster", "nope"], "cluster must be 'ray' or 'ray:ADDRESS'"),
              (["--cluster", "ray:nowhere"], "is not auto or HOST:PORT")]
ROLLOUT_SIDE = [
    (["--max-tasks", "0"], "max_tasks"), (["--sandbox", "nope"], "unknown sandbox backend 'nope'"),
    (["--agent-wall-time-s", "0"], "agent_wall_time_s"), (["--file-setup-timeout-s", "0"], "file_setup_timeout_s"),
    (["--output-tail-bytes", "-1"], "output_tail_bytes"),
    (["--test-timeout-s", "0"], "test_timeout_s"), (["--git-timeout-s", "0"], "git_timeout_s"),
    (["--max-patch-bytes", "0"], "max_patch_bytes"), (["--keep-patch-chars", "-1"], "keep_patch_chars"),
    (["--reward-mode", "half"], "reward_mode"),
    (["--docker-timeout-s", "0"], "docker_timeout_s"), (["--keep-log-chars", "-1"], "keep_log_chars"),
    (["--container-pids-limit", "0"], "container_pids_limit"), (["--container-cpus", "0"], "container_cpus"),
    (["--max-turns", "many"], "invalid int value"), (["--no-such-option", "1"], "--no-such-option"),
    (["yaml:episode: {max_turns: 3}\n"], "'max_turns' does not belong in section 'episode'"),
    (["yaml:foo: {max_turns: 3}\n"], "unknown section 'foo'"),
    (["yaml:worker: {max_turnz: 3}\n"], "unknown option 'max_turnz' in section 'worker'"),
    (["yaml:sandbox: {backend: local, bogus: 1}\n"], "unknown option 'bogus' in section 'sandbox'"),
    (["yaml:sandbox: {backend: docker, user: '0:0'}\n"], "non-root"),
    (["yaml:agent: {name: oracle, flavour: 1}\n"], "agent options ['flavour']"),
    (["yaml:- a list\n"], "must hold a mapping"),
    *GATE,
]
ROLLOUTS = [
    (["--num-generations", "0"], "num_generations"), (["--temperature", "-1"], "temperature"),
    (["--max-model-len", "1"], "max_model_len"), (["--engine", "remote"], "invalid choice: 'remote'"),
    *WORKER_OWN, *ROLLOUT_SIDE,
]
TRAIN = [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--tree-attention", "fast"], "--tree-attention: invalid choice: 'fast'"),
    (["--lora-r", "0"], "lora_r"), (["--max-model-len", "1"], "max_model_len must be >= 2"), (["--vllm-weight-sync", "pigeon"], "--vllm-weight-sync: invalid choice"),
    (["--max-steps", "0"], "--max-steps"), (["--vllm-weight-sync", "ipc"], "needs --vllm-url"),
    (["--vllm-weight-sync", "lora", "--vllm-url", "http://127.0.0.1:9"], "--use-peft"),
    (["yaml:tree_attention: fast\n"], "tree_attention must be one of auto, torch, kernel; got 'fast'"),
    (["yaml:vllm_weight_sync: pigeon\n"], "vllm_weight_sync must be one of nccl, ipc, disk, lora; got 'pigeon'"),
    (["--off-policy-correction", "icepop2"], "--off-policy-correction: invalid choice: 'icepop2'"),
    (["yaml:off_policy_correction: icepop2\n"], "off_policy_correction must be one of none, tis, mis-token"),
    (["--use-peft", "--lora-target-modules", "lm_head"], "lm_head"),
    (["--num-generations", "0"], "num_generations"), (["--temperature", "-1"], "temperature"),
    (["--per-device-train-batch-size", "0"], "per-device-train-batch-size"),
    (["--learning-rate", "fast"], "invalid float value"),
    (["--engine-replicas", "0"], "--engine-replicas must be >= 1"),
    (["--engine-replicas", "2", "--vllm-url", "http://127.0.0.1:9"], "--engine-replicas starts local engines"),
    *WORKER_OWN, *ROLLOUT_SIDE,
]
ENGINE = [
    (["--max-batch-size", "0"], "max_batch_size"), (["--max-pause-s", "0"], "max_pause_s"),
    (["--max-model-len", "1"], "max_model_len"), (["--max-model-len", "99999999"], "the model's max positions"),
    (["--port", "70000"], "port"), (["--torch-threads", "-1"], "torch_threads"),
    (["--max-request-bytes", "0"], "max_request_bytes"), (["--dtype", "float16"], "invalid choice: 'float16'"),
    (["--no-such-option", "1"], "--no-such-option"),
    (["yaml:worker: {max_turns: 3}\n"], "unknown section 'worker'"),
    (["yaml:max_turns: 3\n"], "unknown option 'max_turns' at the top level"),
]

# The commands that take plain flags, whole argv each ({tmp} is the test's directory; `not-json.jsonl` is a file there
# holding no JSON); every one must be refused before it reads, builds, serves or deploys anything.
OTHER_COMMANDS = [
    (["inspect"], "the following arguments are required: path"),
    (["inspect", "{tmp}/missing"], "does not exist"),
    (["inspect", "{tmp}/not-json.jsonl", "--out", "{tmp}/out/page.html"], "is not JSON"),
    (["inspect", "{tmp}/not-json.jsonl", "--limit", "0"], "--limit must be >= 1"),
    (["inspect", "{tmp}/not-json.jsonl", "--serve", "--port", "70000"], "--port must lie in [0, 65535]"),
    (["inspect", "{tmp}/not-json.jsonl", "--port", "x"], "invalid int value: 'x'"),
    (["doctor", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["grade"], "--instance ROW.json and --log LOG are both required"),
    (["grade", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["grade", "--instance", "{tmp}/missing.json", "--log", "{tmp}/missing.txt"], "no such file"),
    (["grade", "--instance", "{tmp}/not-json.jsonl", "--log", "{tmp}/not-json.jsonl"], "row {tmp}/not-json.jsonl"),
    (["tasks", "nope"], "unknown tasks command 'nope'"),
    (["tasks", "synth"], "the following arguments are required: --out"),
    (["tasks", "synth", "--out", "{tmp}/out", "--limit", "0"], "--limit must be >= 1"),
    (["tasks", "synth", "--out", "{tmp}/out", "--seed", "x"], "invalid int value: 'x'"),
    (["tasks", "synth", "--out", "{tmp}/out", "--package", "foo"], "expected NAME==VERSION"),
    (["tasks", "synth", "--out", "{tmp}/out", "--package", "foo==1"], "--package needs --source and --tests"),
    (["tasks", "synth", "--out", "{tmp}/out", "--only", "nope"], "'nope' is not in the manifest"),
    (["tasks", "synth", "--out", "{tmp}/out", "--manifest", "{tmp}/missing.toml"], "does not exist"),
    (["tasks", "synth", "--out", "{tmp}/out", "--manifest", "{tmp}/m.toml", "--package", "a==1"], "not both"),
    (["space", "nope"], "invalid choice: 'nope'"),
    (["space", "deploy", "--dry-run"], "the following arguments are required: --space_id/--space-id"),
    (["space", "deploy", "--space-id", "not a space", "--dry-run"], "--space-id must be OWNER/NAME"),
    (["space", "deploy", "--space-id", "o/n", "--max-model-len", "0", "--dry-run"], "--max-model-len must be >= 1"),
    (["space", "deploy", "--space-id", "o/n", "--max-model-len", "x", "--dry-run"], "invalid int value: 'x'"),
    (["space", "deploy", "--space-id", "o/n", "--hardware", "gpu-9000", "--dry-run"], "not a Space hardware"),
]


def _argv(base: list[str], extra: list[str], tmp_path, index: int) -> list[str]:
    if extra and extra[0].startswith("yaml:"):
        path = tmp_path / f"case{index}.yaml"
        path.write_text(extra[0][len("yaml:"):])
        extra = ["--config", str(path)]
    return [*base, *extra]


def _probe(command: str, base: list[str], cases, tmp_path) -> None:
    _probe_argvs([_argv([command, *base], extra, tmp_path, i) for i, (extra, _) in enumerate(cases)],
                 [needle for _, needle in cases], tmp_path)


def _probe_argvs(argvs: list[list[str]], needles: list[str], tmp_path) -> None:
    """Run every argv in one probe process; each must end in one line `intercept-rl <command>[ <sub>]: ...<needle>...`,
    a non-zero exit, no traceback and nothing left running."""
    cases_file = tmp_path / "cases.json"
    cases_file.write_text(json.dumps(argvs))
    proc = subprocess.run([sys.executable, "-m", "tests.support.cli_probe", str(cases_file)], cwd=REPO,
                          capture_output=True, text=True, timeout=800,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRACKIO_DIR": str(tmp_path / "trackio")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    failures = []
    for argv, needle, result in zip(argvs, needles, results, strict=True):
        lines = [line for line in result["stderr"].splitlines() if line.strip()]
        problems = []
        if result["traceback"]:
            problems.append("traceback: " + result["traceback"].strip().splitlines()[-1])
        if not result["code"]:
            problems.append(f"exit code {result['code']!r}")
        command = f"intercept-rl {argv[0]}"  # `intercept-rl space deploy: ...` names the subcommand too
        heads = (command, f"{command} {argv[1]}" if len(argv) > 1 else command)
        if len(lines) != 1 or lines[0].split(": ", 1)[0] not in heads or needle not in lines[0]:
            problems.append(f"stderr {lines!r} (wanted one line holding {needle!r})")
        if result["children"] or result["threads"]:
            problems.append(f"left running: processes {result['children']}, threads {result['threads']}")
        if problems:
            failures.append(f"{' '.join(argv)}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "out").exists() and not (tmp_path / "r.jsonl").exists()  # nothing written either


def test_rollouts_rejects_each_invalid_value_before_starting_anything(tmp_path):
    _probe("rollouts", ["--tasks", "embedded", "--agent", "oracle", "--out", str(tmp_path / "r.jsonl")], ROLLOUTS,
           tmp_path)


def test_train_rejects_each_invalid_value_before_starting_anything(tmp_path):
    _probe("train", ["--preset", "cpu-demo", "--output-dir", str(tmp_path / "out")], TRAIN, tmp_path)


def test_every_other_command_rejects_each_invalid_value_in_one_line(tmp_path):
    """inspect, doctor, grade, tasks synth and the Space's `space deploy`, in one probe process (a few seconds)."""
    (tmp_path / "not-json.jsonl").write_text("not json\n")
    fill = lambda text: text.replace("{tmp}", str(tmp_path))  # noqa: E731
    _probe_argvs([[fill(arg) for arg in argv] for argv, _ in OTHER_COMMANDS],
                 [fill(needle) for _, needle in OTHER_COMMANDS], tmp_path)


def test_engine_rejects_each_invalid_value_before_serving(tmp_path):
    _probe("engine", ["--model", "embedded", "--port", "0"], ENGINE, tmp_path)


def test_the_issues_example_through_the_installed_command(tmp_path):
    """`rollouts --tasks embedded --agent oracle --num-generations 0` started the local engine, then died with a
    ValueError traceback. Now: one line, exit 2, the engine never started."""
    proc = subprocess.run([sys.executable, "-m", "intercept_rl_cli", "rollouts", "--tasks", "embedded", "--agent",
                           "oracle", "--num-generations", "0", "--out", str(tmp_path / "r.jsonl")], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == ["intercept-rl rollouts: num_generations must be >= 1"]
    assert not (tmp_path / "r.jsonl").exists() and not (tmp_path / "r.log").exists()
