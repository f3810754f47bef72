"""The reliability suite's scale: a quick slice in `make test`, the full run with `make test-reliability`.

`RELIABILITY_FULL=1` multiplies every count (≥ 10,000 hostile requests in all); each test prints what it sent and
found, so the full run's output is the report.
"""

from __future__ import annotations

import os

FULL = os.environ.get("RELIABILITY_FULL") == "1"


def scaled(quick: int, full: int) -> int:
    return full if FULL else quick

