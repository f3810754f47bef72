"""The `intercept-rl` command: one entry point, one subcommand per job.

Each subcommand lives with the package that owns it and is imported only when used, so `--help` stays fast and a
CPU box never imports what a GPU subcommand needs.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module with a `main(argv) -> int`, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "engine": ("local_engine.cli", "serve a model with the local engine (the vLLM API subset we use)"),
    "rollouts": ("rollout_worker.cli", "run agents on tasks through the gate, grade them, write trajectories"),
    "train": ("trainer.train_swe_async_grpo", "train with TRL's AsyncGRPOTrainer (`make demo` on a laptop)"),
    "tasks": ("rollout_worker.environment.tasks.synth.cli", "synthesize validated SWE-bench-format tasks from "
              "real Python packages (`tasks synth`)"),
    "grade": ("rollout_worker.grade_cli", "grade a saved SWE-bench test log with the official harness (offline)"),
    "warm-start": ("trainer.warm_start.build", "build (once, cached) the warm-started tiny policy that emits "
                   "mini-swe-agent tool calls (scripted teacher, real agent, supervised fine-tune)"),
    "inspect": ("trainer.inspect_page", "a token-level HTML page of a run's rollouts (mask, logprobs, versions)"),
    "doctor": ("doctor.cli", "check the machine and installs against the locks, one line each with its remedy"),
    "space": ("space_app.cli", "deploy to a Hugging Face Space (`space deploy --dry-run` prints the plan)"),
}


def _usage() -> str:
    lines = ["usage: intercept-rl <command> [options]", "", "commands:"]
    width = max(len(name) for name in SUBCOMMANDS)
    for name, (_, text) in SUBCOMMANDS.items():
        lines.append(f"  {name.ljust(width)}  {text}")
    lines += ["", "`intercept-rl <command> --help` documents each command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from importlib.metadata import version

        print(version("intercept-rl"))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"intercept-rl: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    show_traceback = "--traceback" in rest  # every command accepts it: known failures keep their traceback too
    rest = [arg for arg in rest if arg != "--traceback"]
    module = importlib.import_module(SUBCOMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except Exception as error:  # a failure the user can fix reads as one line with its remedy; a bug keeps its trace
        from intercept_common.cli_errors import one_line

        line = one_line(error)
        if line is None or show_traceback:
            raise
        print(f"intercept-rl {name}: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
