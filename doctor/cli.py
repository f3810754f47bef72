"""`intercept-rl doctor`: check everything intercept-rl relies on, one line each with its remedy."""

from __future__ import annotations

from intercept_common.cli_errors import OneLineArgumentParser

from .checks import Status, run_all


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(
        prog="intercept-rl doctor",
        description="Check the machine and the installs against the committed locks; exit 1 if anything required "
                    "is missing or broken (each failing line says how to fix it).")
    parser.add_argument("--docker", action="store_true", help="a Docker daemon is required (--sandbox docker)")
    parser.add_argument("--gpu", action="store_true", help="check the GPU setup too: CUDA, vLLM version, serve flags")
    args = parser.parse_args(argv)
    results = run_all(docker=args.docker, gpu=args.gpu)
    for result in results:
        print(result.line(), flush=True)
    failed = [r for r in results if r.status is Status.FAIL]
    warned = [r for r in results if r.status is Status.WARN]
    print(f"doctor: {len(results) - len(failed) - len(warned)} ok, {len(warned)} warnings, {len(failed)} failed")
    return 1 if failed else 0
