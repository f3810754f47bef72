"""`<output_dir>/rollouts.jsonl`: every finished rollout of a training run, one JSON line each, as it happens.

The rollout worker publishes one record per rollout of every completed group on `worker.trajectories` (with
`keep_trajectories=True`), trained or not: unscorable members and dropped groups are written too, so a user can see
exactly what the run trained on and what it threw away. A small daemon thread drains that queue into the file, one
flushed line per record, so a killed run loses at most the line being written. A resumed run appends.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

ROLLOUTS_FILE = "rollouts.jsonl"


class RolloutRecordWriter:
    """Drains a queue of rollout records (`Trajectory.record` dicts) into a JSONL file from a background thread.

    Args:
        records: the worker's `trajectories` queue.
        path: the JSONL file.
        append: keep the existing lines (a resumed run); otherwise the file starts empty.
        poll_s: how long one wait on the queue lasts, i.e. how quickly `close()` is noticed.

    Use as a context manager, or `start()` … `close()`; `close()` writes whatever is still queued, then stops.
    """

    def __init__(self, records: queue.Queue, path: str | Path, *, append: bool, poll_s: float = 0.5):
        self.records = records
        self.path = Path(path)
        self.append = append
        self.poll_s = poll_s
        self.written = 0
        self.dropped = 0  # records that could not be written (the error is logged once)
        self.error: OSError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle = None

    def start(self) -> RolloutRecordWriter:
        if self._thread is not None:
            raise RuntimeError("writer already started")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a" if self.append else "w", encoding="utf-8")
        self._thread = threading.Thread(target=self._run, name="rollout-records", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is still queued and stop. Call after the worker stopped, so nothing is published later."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():  # only a file system that blocks writes gets here; the daemon thread dies with us
            logger.error("rollout record writer did not finish within %.0f s; %s may be incomplete", timeout_s,
                         self.path)
            return
        try:
            self._handle.close()
        except OSError:  # the unflushed tail of a write that already failed (and was counted) fails again
            pass
        logger.info("%d rollout records in %s%s", self.written, self.path,
                    f" ({self.dropped} could not be written: {self.error})" if self.dropped else "")

    def __enter__(self) -> RolloutRecordWriter:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                record = self.records.get(timeout=self.poll_s)
            except queue.Empty:
                continue
            self._write(record)
        while True:  # stopping: what the worker published before it stopped still belongs in the file
            try:
                record = self.records.get_nowait()
            except queue.Empty:
                return
            self._write(record)

    def _write(self, record: dict) -> None:
        if self.error is not None:  # keep draining (the queue is unbounded) but do not retry a broken file
            self.dropped += 1
            return
        try:
            # default=str: a stray non-JSON value in `details` must not cost the whole line.
            line = json.dumps(record, default=str) + "\n"
        except (TypeError, ValueError) as error:  # e.g. a circular structure: lose this record, not the thread
            self.dropped += 1
            logger.error("rollout record not serializable, skipped: %s", error)
            return
        try:
            self._handle.write(line)
            self._handle.flush()
            self.written += 1
        except OSError as error:
            self.error = error
            self.dropped += 1
            logger.error("cannot write rollout records to %s: %s; training continues without them", self.path, error)
