"""Quiet, informative terminal output for `intercept-rl train` (and `intercept-rl rollouts`).

The terminal gets one progress bar and one line per optimizer step (step, reward, ratio, kl, rollouts/s, tokens
trained, staleness, `util` = sampled tokens trained ÷ generated in the step, step seconds, turns per rollout, solve
rate); warnings that matter are summarised on that line (stale samples dropped, stale rollouts aborted, unscorable
rollouts, forks, parse failures, and a count of logged warnings) instead of one line each. Everything else (TRL's metric
dicts, INFO logs of TRL / accelerate / transformers / ours) goes to `<output_dir>/train.log`, or to the terminal as
well with `--verbose`. Errors still print at once. At the end of a run `reward_chart` draws reward per step.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from intercept_common.run_logging import LOG_FILE, PREFIX, RunLogging, WarningSummary, short_message, write_line

logger = logging.getLogger(__name__)
METRICS_LINE = "metrics at step"  # the log-file line carrying one step's full metric dict as JSON
# LOG_FORMAT's asctime, then the line `on_log` writes
_METRICS_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) .*" + METRICS_LINE + r" (\d+): (\{.*\})$", re.M)


@dataclass(frozen=True)
class StepMetrics:
    """One optimizer step's full metric dict, read back from `train.log`."""

    step: int
    logged_at: float  # epoch seconds, from the line's timestamp (local time, millisecond resolution)
    metrics: dict[str, Any]


def read_step_metrics(log_text: str) -> list[StepMetrics]:
    """Every step's metrics line of a `train.log`'s text, in order (benchmarks read runs with this)."""
    return [StepMetrics(int(step), datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp(), json.loads(blob))
            for stamp, step, blob in _METRICS_RE.findall(log_text)]


__all__ = ["LOG_FILE", "METRICS_LINE", "RunLogging", "StepMetrics", "WarningSummary", "make_progress_callback",
           "quiet_trackio_banners", "quiet_trainer", "read_step_metrics", "reward_chart", "reward_summary",
           "short_message"]


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
               ("stale", "sample/staleness_mean", ".1f"), ("util", "off_policy/generation_utilisation", ".2f"),
               ("step_s", "perf/step_s", ".1f"), ("turns", "rollout/turns", ".1f"), ("solved", "rollout/resolved", ".2f"))
    # Per-step counts of what the run threw away or repaired (keys with `total` are per-logging-window sums).
    EVENTS = (("sample/dropped_stale_total", "stale dropped"), ("rollout/aborted_stale_total", "stale aborted"),
              ("rollout/unscorable_total", "unscorable"),
              ("rollout/forks_total", "forks"), ("rollout/parse_failures_total", "parse failures"),
              ("rollout/overlong_total", "overlong"),
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
        # Every metric TRL logged, in the run's log file: with `--report-to none` it would otherwise exist nowhere
        # (gpu/summarize_production.py reads these lines).
        logger.info("%s %d: %s", METRICS_LINE, state.global_step, json.dumps(logs, default=str))
        line = self.format_line(state.global_step, state.max_steps, logs)
        if isinstance(logs.get("reward"), (int, float)):
            self.rewards[state.global_step] = float(logs["reward"])
            if self.bar is not None:
                self.bar.set_postfix_str(f"reward {logs['reward']:.3f}", refresh=False)
        write_line(line)

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
