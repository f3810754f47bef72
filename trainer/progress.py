"""Quiet, informative terminal output for `intercept-rl train` (and `intercept-rl rollouts`).

The terminal gets one progress bar and one line per optimizer step (step, reward, ratio, kl, rollouts/s, tokens
trained, staleness, step seconds); warnings that matter are summarised on that line (stale samples dropped,
unscorable rollouts, forks, and a count of logged warnings) instead of one line each. Everything else (TRL's metric
dicts, INFO logs of TRL / accelerate / transformers / ours) goes to `<output_dir>/train.log`, or to the terminal as
well with `--verbose`. Errors still print at once. At the end of a run `reward_chart` draws reward per step.
"""

from __future__ import annotations

import logging
import math
import logging.handlers
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

LOG_FILE = "train.log"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PREFIX = "[intercept-rl]"


def _write(line: str) -> None:
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
            _write(f"{PREFIX} {record.levelname.lower()}: {message}")
            return
        key = short_message(record)
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

    def attach_file(self, output_dir: str | Path) -> Path:
        """Start writing `<output_dir>/train.log`, with everything logged so far."""
        path = Path(output_dir) / LOG_FILE
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


def quiet_trackio_banners() -> None:
    """Call only after TRACKIO_DIR is set: importing trackio fixes its directory.

    Trackio prints a banner on `init` / `finish` (project, directory, `trackio show` hint): into the log instead.

    The end-of-run summary prints the one dashboard command that works for this run (with its TRACKIO_DIR).
    """
    try:
        import trackio
    except Exception:  # noqa: BLE001 - not installed: nothing to quiet
        return
    for name in ("init", "finish"):
        original = getattr(trackio, name, None)
        if original is None or getattr(original, "_quieted", False):
            continue

        def quiet(*args, _original=original, _name=name, **kwargs):
            import contextlib
            import io

            buffer = io.StringIO()
            try:
                with contextlib.redirect_stdout(buffer):
                    return _original(*args, **kwargs)
            finally:
                if buffer.getvalue().strip():
                    logging.getLogger("trackio").info("trackio.%s: %s", _name, buffer.getvalue().strip())

        quiet._quieted = True
        setattr(trackio, name, quiet)


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


class ProgressReporter:
    """A `TrainerCallback` (built by `make_progress_callback`): a bar plus one line per step; keeps reward per step.

    Replaces transformers' `ProgressCallback` / `PrinterCallback`, which print each metric dict (~60 keys) whole.
    """

    COLUMNS = (("reward", "reward", ".3f"), ("ratio", "ratio", ".3f"), ("kl", "kl", ".2g"),
               ("rollouts/s", "rollout/rollouts_per_s", ".2f"), ("tokens", "batch/trained_tokens_per_step", ".0f"),
               ("stale", "sample/staleness_mean", ".1f"), ("step_s", "perf/step_s", ".1f"))
    # Per-step counts of what the run threw away or repaired (keys with `total` are per-logging-window sums).
    EVENTS = (("sample/dropped_stale_total", "stale dropped"), ("rollout/unscorable_total", "unscorable"),
              ("rollout/forks_total", "forks"), ("rollout/overlong_total", "overlong"),
              ("batch/dropped_oversize_total", "oversize dropped"))

    def __init__(self, summary: WarningSummary | None = None, log_path: Path | None = None, show_bar: bool = True):
        self.summary = summary
        self.log_path = log_path
        self.show_bar = show_bar
        self.bar = None
        self.rewards: dict[int, float] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.show_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, desc="training", unit="step", dynamic_ncols=True,
                            disable=not sys.stderr.isatty(), file=sys.stderr)
            self.bar.update(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        line = self.format_line(state.global_step, state.max_steps, logs)
        if isinstance(logs.get("reward"), (int, float)):
            self.rewards[state.global_step] = float(logs["reward"])
            if self.bar is not None:
                self.bar.set_postfix_str(f"reward {logs['reward']:.3f}", refresh=False)
        _write(line)

    def format_line(self, step: int, max_steps: int, logs: dict[str, Any]) -> str:
        parts = [f"{PREFIX} step {step}/{max_steps}"]
        parts += [f"{label}={_fmt(logs.get(key), spec)}" for label, key, spec in self.COLUMNS]
        events = [f"{label} {int(logs[key])}" for key, label in self.EVENTS
                  if isinstance(logs.get(key), (int, float)) and logs[key] > 0]
        if self.summary is not None:
            counts = self.summary.take()
            if counts:
                top = "; ".join(f"{n}x {msg}" if n > 1 else msg for msg, n in counts.most_common(2))
                more = " …" if len(counts) > 2 else ""
                where = self.log_path.name if self.log_path else "the log"
                events.append(f"{sum(counts.values())} warnings ({top}{more}; see {where})")
        if events:
            parts.append("| " + ", ".join(events))
        return " ".join(parts)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def make_progress_callback(summary: WarningSummary | None = None, log_path: Path | None = None,
                           show_bar: bool = True):
    """A `ProgressReporter` that is also a transformers `TrainerCallback`."""
    from transformers import TrainerCallback

    class _Reporter(ProgressReporter, TrainerCallback):
        pass

    return _Reporter(summary, log_path, show_bar)


def quiet_trainer(trainer, reporter) -> None:
    """Swap transformers' metric-dict printers for `reporter`."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(reporter)


def reward_chart(rewards: dict[int, float] | list[float], height: int = 8, max_width: int = 60) -> str:
    """A compact text chart of reward per step: one column per step (averaged into buckets beyond `max_width`)."""
    if isinstance(rewards, dict):
        steps = sorted(rewards)
        values = [rewards[s] for s in steps]
    else:
        values = list(rewards)
        steps = list(range(1, len(values) + 1))
    if not values:
        return "(no reward logged)"
    if len(values) > max_width:  # bucket
        size = -(-len(values) // max_width)
        values = [sum(values[i:i + size]) / len(values[i:i + size]) for i in range(0, len(values), size)]
    lo = math.floor(min(values) * 10 + 1e-9) / 10  # round outwards to 0.1
    hi = max(math.ceil(max(values) * 10 - 1e-9) / 10, lo + 0.1)
    rows = []
    for r in range(height, 0, -1):
        top = lo + (hi - lo) * r / height
        mid = lo + (hi - lo) * (r - 0.5) / height
        label = f"{top:5.2f}" if r in (height, (height + 1) // 2) else "     "
        cells = "".join("█" if v >= top - 1e-12 else ("▄" if v >= mid else " ") for v in values)
        rows.append(f"{label} ┤{cells}")
    rows.append(f"{lo:5.2f} ┼" + "─" * len(values))
    first, last = str(steps[0]), str(steps[-1])
    rows.append("       " + first + " " * max(1, len(values) - len(first) - len(last)) + last + "  (step)")
    return "\n".join(rows)


def reward_summary(rewards: dict[int, float], window: int = 5) -> str:
    """`reward: first W steps mean → last W steps mean (rise)`."""
    values = [rewards[s] for s in sorted(rewards)]
    if not values:
        return "no reward logged"
    k = max(1, min(window, len(values) // 2 or 1))
    first, last = sum(values[:k]) / k, sum(values[-k:]) / k
    return (f"mean reward, steps 1-{k}: {first:.3f}  ->  steps {len(values) - k + 1}-{len(values)}: {last:.3f}  "
            f"({last - first:+.3f})")
