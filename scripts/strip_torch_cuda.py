"""Remove from a pip-compile lock the packages only a CUDA build of torch needs (nvidia-*, cuda-*, triton).

scripts/lock.sh resolves with `torch==$TORCH_VERSION` as a constraint; where the CPU wheel of that version is not
on the index (it is on this project's machines), the resolver sees PyPI's CUDA build and pins its companions. They
must never be installed on a CPU machine (GBs of libraries for nothing), and a GPU box gets them with its own torch.
A block is removed when it is a CUDA companion and everything that pulls it in is torch or another removed block.
Usage: python scripts/strip_torch_cuda.py LOCKFILE (rewrites it in place; prints what it removed).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

CUDA_COMPANION = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")


def blocks(text: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(header lines, [(normalized name, lines)]) of a pip-compile output."""
    header: list[str] = []
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if match:
            out.append((re.sub(r"[-_.]+", "-", match.group(1)).lower(), [line]))
        elif out:
            out[-1][1].append(line)
        else:
            header.append(line)
    return header, out


def vias(lines: list[str]) -> set[str]:
    found: set[str] = set()
    for line in lines:
        text = line.strip().lstrip("#").strip()
        text = text.removeprefix("via").strip()
        if text and not text.startswith("--hash") and not line.lstrip().startswith("--hash"):
            found.add(re.sub(r"[-_.]+", "-", text.split()[0]).lower())
    return found


def main(path: str) -> int:
    lock = Path(path)
    header, entries = blocks(lock.read_text())
    removed: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, lines in entries:
            if name in removed or not CUDA_COMPANION.match(name):
                continue
            if vias(lines) <= {"torch"} | removed:
                removed.add(name)
                changed = True
    kept = [line for name, lines in entries if name not in removed for line in lines]
    lock.write_text("\n".join(header + kept) + "\n")
    print(f"{path}: removed {len(removed)} CUDA-only companions of torch: {' '.join(sorted(removed)) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
