"""`intercept-rl space …`: deploy intercept-rl as a Hugging Face Space (see space_app/deploy.py, docs/space.md)."""

from __future__ import annotations

import argparse
import sys

from intercept_common.cli_errors import OneLineArgumentParser
from intercept_common.served_model import DEFAULT_SERVED_MODEL_NAME

from .deploy import DEFAULT_HARDWARE, DEFAULT_MODEL, SPACE_MAX_MODEL_LEN, DeployOptions, PlanError, deploy


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="intercept-rl space", description="Run intercept-rl on a Hugging Face Space.")
    commands = parser.add_subparsers(dest="command", required=True)
    dep = commands.add_parser(
        "deploy", help="create (private by default), configure and upload a training Space",
        description="Create the Space (private unless --public), set its secrets (HF_TOKEN from the environment or "
                    "the HF login; a freshly generated gate secret) and variables, request its hardware and upload "
                    "space_app/ plus the package, with huggingface_hub.HfApi. --dry-run prints every call "
                    "(secrets by name only) and calls nothing.")
    dep.add_argument("--space-id", required=True, metavar="OWNER/NAME", help="the Space to create or update")
    dep.add_argument("--hardware", default=DEFAULT_HARDWARE,
                     help=f"Space hardware (huggingface_hub.SpaceHardware value); default {DEFAULT_HARDWARE}. vLLM "
                          "takes GPU 0 and the trainer the others, so training needs at least 2 GPUs.")
    visibility = dep.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=True,
                            help="private Space (the default)")
    visibility.add_argument("--public", dest="private", action="store_false", help="public Space (status page and "
                            "gate URL reachable by anyone; rollout keys still required)")
    dep.add_argument("--model", default=DEFAULT_MODEL, help=f"model to train (Hub id); default {DEFAULT_MODEL}")
    dep.add_argument("--served-model-name", default=DEFAULT_SERVED_MODEL_NAME, help="name vLLM serves the model under")
    dep.add_argument("--max-model-len", type=int, default=SPACE_MAX_MODEL_LEN,
                     help=f"vLLM context length; default {SPACE_MAX_MODEL_LEN}, a Space-only cap (other commands "
                          "default to the model's max positions): vLLM refuses to start when one full-length "
                          "sequence's KV cache does not fit the GPU")
    dep.add_argument("--dtype", default="bfloat16", help="vLLM and trainer dtype (must match)")
    dep.add_argument("--train-args", default="",
                     help="extra flags for the trainer, one string, e.g. '--tasks SWE-Gym/SWE-Gym --max-steps 200' "
                          "(see `intercept-rl train --help`)")
    dep.add_argument("--trackio-project", default=None, help="Trackio project; default the Space's name")
    dep.add_argument("--trackio-space-id", default=None, metavar="OWNER/NAME",
                     help="Trackio dashboard Space (private unless the trainer is told otherwise)")
    dep.add_argument("--no-pause-when-done", dest="pause_when_done", action="store_false",
                     help="keep the Space running after training ends (it keeps billing)")
    dep.add_argument("--allow-unsandboxed", action="store_true",
                     help="DANGEROUS: if bubblewrap cannot start inside the Space, run model-written code without a "
                          "sandbox instead of refusing to start")
    dep.add_argument("--dry-run", action="store_true", help="print the plan and call nothing")
    dep.add_argument("--follow", action="store_true",
                     help="follow the build and the run; pause the Space when training ends or fails")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    options = DeployOptions(
        space_id=args.space_id, hardware=args.hardware, private=args.private, model=args.model,
        served_model_name=args.served_model_name, max_model_len=args.max_model_len, dtype=args.dtype,
        train_args=args.train_args, trackio_project=args.trackio_project, trackio_space_id=args.trackio_space_id,
        pause_when_done=args.pause_when_done, allow_unsandboxed=args.allow_unsandboxed)
    try:
        return deploy(options, dry_run=args.dry_run, follow_run=args.follow)
    except PlanError as error:
        print(f"intercept-rl space deploy: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
