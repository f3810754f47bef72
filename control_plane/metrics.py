"""Gate metrics, rendered in the Prometheus text exposition format (hand-written: no dependency, a few counters)."""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Any

# Seconds. Chat latency spans the worker's generation time, so the buckets reach far.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# A status recorded when the client went away before the gate could answer (nginx's convention).
CLIENT_CLOSED = 499


class GateMetrics:
    """Counters and a latency histogram per route; gauges are read live from the server when rendering."""

    def __init__(self) -> None:
        self.requests_total: dict[tuple[str, int], int] = defaultdict(int)
        self._bucket_counts: dict[str, list[int]] = defaultdict(lambda: [0] * (len(LATENCY_BUCKETS) + 1))
        self._latency_sum: dict[str, float] = defaultdict(float)
        self.disconnects_total = 0
        self.timeouts_total = 0
        self.rollouts_opened_total = 0
        self.rate_limited_total = 0

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests_total[(route, status)] += 1
        self._bucket_counts[route][bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._latency_sum[route] += seconds

    def snapshot(self, open_rollouts: int, pending_requests: int) -> dict[str, Any]:
        """Plain-dict view for tests and logs."""
        return {
            "requests_total": {f"{route} {status}": n for (route, status), n in sorted(self.requests_total.items())},
            "latency_count": {route: sum(counts) for route, counts in self._bucket_counts.items()},
            "latency_sum_s": dict(self._latency_sum),
            "open_rollouts": open_rollouts,
            "pending_requests": pending_requests,
            "disconnects_total": self.disconnects_total,
            "timeouts_total": self.timeouts_total,
            "rollouts_opened_total": self.rollouts_opened_total,
            "rate_limited_total": self.rate_limited_total,
        }

    def render(self, open_rollouts: int, pending_requests: int) -> str:
        lines = [
            "# HELP gate_requests_total HTTP requests answered by the gate, by route and status.",
            "# TYPE gate_requests_total counter",
        ]
        for (route, status), n in sorted(self.requests_total.items()):
            lines.append(f'gate_requests_total{{route="{route}",status="{status}"}} {n}')
        lines += [
            "# HELP gate_request_duration_seconds Time from request arrival to the end of its response.",
            "# TYPE gate_request_duration_seconds histogram",
        ]
        for route, counts in sorted(self._bucket_counts.items()):
            cumulative = 0
            for bound, count in zip(LATENCY_BUCKETS, counts):
                cumulative += count
                lines.append(f'gate_request_duration_seconds_bucket{{route="{route}",le="{bound}"}} {cumulative}')
            cumulative += counts[-1]
            lines.append(f'gate_request_duration_seconds_bucket{{route="{route}",le="+Inf"}} {cumulative}')
            lines.append(f'gate_request_duration_seconds_sum{{route="{route}"}} {self._latency_sum[route]:.6f}')
            lines.append(f'gate_request_duration_seconds_count{{route="{route}"}} {cumulative}')
        for name, kind, help_text, value in (
            ("gate_open_rollouts", "gauge", "Rollouts currently open.", open_rollouts),
            ("gate_pending_requests", "gauge", "Chat requests queued or awaiting their reply.", pending_requests),
            ("gate_client_disconnects_total", "counter", "Chat requests whose client left before the reply.",
             self.disconnects_total),
            ("gate_request_timeouts_total", "counter", "Chat requests that timed out waiting.", self.timeouts_total),
            ("gate_rollouts_opened_total", "counter", "Rollouts opened since start.", self.rollouts_opened_total),
            ("gate_rate_limited_total", "counter", "Requests refused by a rollout's rate limit.",
             self.rate_limited_total),
        ):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"
