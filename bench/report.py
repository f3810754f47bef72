"""Small helpers every benchmark prints with: percentiles, the machine line, aligned tables, target verdicts."""

from __future__ import annotations

import os
import platform
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def ensure_repo_on_path() -> None:
    """`python bench/x.py` puts bench/ first on sys.path; the repo root is needed for `import bench.…`."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `finally` blocks stop the benchmark's child processes."""
    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def machine_line() -> str:
    load = os.getloadavg()
    return (f"machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
            f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min), Python {platform.python_version()}")


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A plain aligned text table (right-aligned numbers)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [" | ".join(h.rjust(w) for h, w in zip(headers, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def verdict(name: str, measured: float, target: float, unit: str, higher_is_better: bool = False) -> str:
    met = measured >= target if higher_is_better else measured <= target
    sign = ">=" if higher_is_better else "<="
    return f"target: {name} {sign} {target:g} {unit}: measured {measured:.3g} {unit} -> {'met' if met else 'NOT met'}"
