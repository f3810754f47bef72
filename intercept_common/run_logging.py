"""Run logging shared by `intercept-rl train` and `intercept-rl rollouts`: everything to a log file, the terminal only
what matters (errors at once, warnings counted so the caller can summarise them on its own progress lines)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
from collections import Counter
from pathlib import Path

LOG_FILE = "train.log"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PREFIX = "[intercept-rl]"
# Warnings libraries emit on every run that no user of ours can act on (kept in the log file, not counted on screen):
# transformers' rename of `gradient_checkpointing` (TRL's config still sets it) and TRL adding its own step callback
# twice (AsyncGRPOTrainer's __init__).
NOT_ACTIONABLE = ("`gradient_checkpointing` is deprecated", "StepIntervalCallback'> to the callbacks")


def write_line(line: str) -> None:
    """Print a line without breaking a live tqdm bar."""
    try:
        from tqdm.auto import tqdm

        tqdm.write(line, file=sys.stdout)
    except Exception:  # noqa: BLE001 - tqdm missing or closed: plain print
        print(line, flush=True)
    sys.stdout.flush()


def short_message(record: logging.LogRecord, width: int = 60) -> str:
    """The gist of a log record for a per-step summary (a Python warning without its file path)."""
    text = record.getMessage() if record.args else str(record.msg)
    first = text.strip().splitlines()[0] if text.strip() else record.name
    if record.name == "py.warnings" and "Warning: " in first:  # "path:line: FutureWarning: message"
        first = first.split("Warning: ", 1)[1]
    return first if len(first) <= width else first[: width - 1] + "…"


class WarningSummary(logging.Handler):
    """Collects WARNING records per step (shown as counts on the step line); prints ERROR and above at once."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self._lock2 = threading.Lock()
        self._counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            message = record.getMessage().splitlines()[0] if record.getMessage() else record.levelname
            write_line(f"{PREFIX} {record.levelname.lower()}: {message}")
            return
        key = short_message(record)
        if any(pattern in record.getMessage() for pattern in NOT_ACTIONABLE):
            return  # library noise a user cannot act on: in the log file only
        with self._lock2:
            self._counts[key] += 1

    def take(self) -> Counter[str]:
        with self._lock2:
            counts, self._counts = self._counts, Counter()
        return counts


class RunLogging:
    """Route logging: everything to a log file (once its directory is known), the terminal only what matters.

    `start()` runs before the output directory is known: records are buffered and written out by `attach_file()`.
    """

    def __init__(self, verbose: bool = False):
        self.verbose = verbose
        self.summary = WarningSummary()
        self.buffer = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 10)
        self.buffer.setLevel(logging.INFO)
        self.file_handler: logging.Handler | None = None
        self.log_path: Path | None = None

    def start(self) -> RunLogging:
        root = logging.getLogger()
        for handler in list(root.handlers):  # a basicConfig of an embedding program would print every INFO line
            root.removeHandler(handler)
        root.setLevel(logging.INFO)
        root.addHandler(self.buffer)
        if self.verbose:
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(logging.Formatter(LOG_FORMAT))
            console.setLevel(logging.INFO)
            root.addHandler(console)
        else:
            root.addHandler(self.summary)
        logging.captureWarnings(True)  # Python warnings become log records: counted, and kept in the log file
        try:  # transformers logs through its own stderr handler; send its records through ours instead
            from transformers.utils import logging as hf_logging

            hf_logging.disable_default_handler()
            hf_logging.enable_propagation()
            if not self.verbose:
                hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars
        except Exception:  # noqa: BLE001
            pass
        return self

    def attach_file(self, output_dir: str | Path, filename: str = LOG_FILE) -> Path:
        """Start writing `<output_dir>/<filename>`, with everything logged so far."""
        path = Path(output_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.setLevel(logging.INFO)
        self.buffer.setTarget(handler)
        self.buffer.flush()
        root = logging.getLogger()
        root.removeHandler(self.buffer)
        root.addHandler(handler)
        self.file_handler, self.log_path = handler, path
        return path
