"""`intercept-rl space …`: deploy intercept-rl as a Hugging Face Space (see space_app/deploy.py, docs/space.md).

`space deploy` reads its options like every other command: the dataclasses of space_app/options.py, from flags in
either spelling or from `--config FILE.yaml` (flat, or under `space:` and `run:`), flags winning."""

from __future__ import annotations

import sys

from intercept_common.cli_errors import OneLineArgumentParser, squash
from intercept_common.config_tree import parse_config_tree
from intercept_common.errors import UserError

from .options import DeployOptions, DeployRun

COMMANDS = {"deploy": "create (private by default), configure and upload a training Space"}


def build_deploy_parser():
    from transformers import HfArgumentParser

    parser = HfArgumentParser((DeployOptions, DeployRun))
    parser.prog = "intercept-rl space deploy"
    parser.description = (
        "Create the Space (private unless --public), set its secrets (HF_TOKEN from the environment or the HF login; a "
        "freshly generated gate secret) and variables, request its hardware and upload space_app/ plus the package, "
        "with huggingface_hub.HfApi. --dry-run prints every call (secrets by name only) and calls nothing. Options "
        "also come from --config FILE.yaml; flags win.")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The subcommand first, with argparse's own one-line refusal of an unknown one.
    top = OneLineArgumentParser(prog="intercept-rl space", description="Run intercept-rl on a Hugging Face Space.")
    commands = top.add_subparsers(dest="command", required=True)
    for name, help_text in COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    top.parse_args(argv[:1])
    try:
        (options, run), _ = parse_config_tree(build_deploy_parser(), argv[1:])
    except UserError as error:  # a bad flag, file or value: one line, before any plan is made
        print(f"intercept-rl space deploy: {squash(str(error))}", file=sys.stderr)
        return 2
    from .deploy import PlanError, deploy

    try:
        return deploy(options, dry_run=run.dry_run, follow_run=run.follow)
    except PlanError as error:
        print(f"intercept-rl space deploy: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
