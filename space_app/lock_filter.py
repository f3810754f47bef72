"""`python3 space_app/lock_filter.py LOCK`: print LOCK (a pip-compile lock with hashes) without torch's runtime.

The Space image takes torch (a CUDA build) and vLLM from its base image; they are outside the project lock on purpose
(README "Reproducible installs"). locks/project.txt was resolved on a CPU machine against torch 2.13, so it also pins
torch's own CUDA runtime (`nvidia-*`, `cuda-*`, `triton`) for that torch: installing those next to the image's torch
would shadow the libraries that torch was built against. This drops exactly those entries (a CUDA torch's own
companions, per machine like torch itself) and keeps every other pin and hash byte for byte, so the result still
installs with `pip install --require-hashes --no-deps`.

Stdlib only: it runs in the image before anything is installed.
"""

from __future__ import annotations

import re
import sys

PROVIDED_BY_BASE_IMAGE = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def filter_lock(text: str) -> tuple[str, list[str]]:
    """(the lock without the base image's packages, the names dropped)."""
    out: list[str] = []
    dropped: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        match = _PIN.match(line)
        if match:  # a new entry starts at column 0; its hashes and `# via` comments are indented below it
            skipping = bool(PROVIDED_BY_BASE_IMAGE.match(normalize(match.group(1))))
            if skipping:
                dropped.append(normalize(match.group(1)))
        elif line and not line[0].isspace():
            skipping = False  # a top-level comment or option line
        if not skipping:
            out.append(line)
    return "".join(out), dropped


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python3 space_app/lock_filter.py LOCK > filtered.txt", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as fh:
        text, dropped = filter_lock(fh.read())
    sys.stdout.write(text)
    print(f"lock_filter: left to the base image: {', '.join(dropped) or 'nothing'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
