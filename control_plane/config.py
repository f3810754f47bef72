"""Configuration of the interception gate."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GateConfig:
    """Limits and timings of the interception gate.

    Every wait the gate performs is bounded by one of these fields, so a silent worker or a stalled client can never
    hold a connection forever.
    """

    max_body_bytes: int = field(
        default=16 * 1024 * 1024,
        metadata={"help": "Largest accepted request body in bytes; larger bodies get HTTP 413."},
    )
    request_timeout_s: float = field(
        default=1800.0,
        metadata={
            "help": "How long a chat request may wait for its reply (queue + generation) before the gate answers "
            "HTTP 504 (or an SSE error event once the stream has started)."
        },
    )
    body_timeout_s: float = field(
        default=60.0,
        metadata={"help": "How long the gate waits for a request body to arrive in full before answering HTTP 408."},
    )
    queue_timeout_s: float = field(
        default=600.0,
        metadata={
            "help": "How long a chat request may sit in its rollout's queue before a worker takes it with "
            "`next_request`; past this the gate answers HTTP 503."
        },
    )
    keepalive_interval_s: float = field(
        default=5.0,
        metadata={
            "help": "While a streaming request waits for its reply, the gate sends the response headers and then an "
            "SSE comment (`: keep-alive`) every this many seconds, so clients and proxies keep the connection open."
        },
    )
    max_pending_per_rollout: int = field(
        default=8,
        metadata={"help": "Most chat requests one rollout may have queued or in progress; more get HTTP 429."},
    )
    stream_chunk_chars: int = field(
        default=64,
        metadata={"help": "Characters of content (or tool-call arguments) per streamed delta chunk."},
    )
    shutdown_timeout_s: float = field(
        default=5.0,
        metadata={"help": "How long `stop()` waits for in-flight HTTP handlers to finish after failing them."},
    )
    report_truncation: bool = field(
        default=True,
        metadata={
            "help": "Tell the agent when a reply was cut by the token limit (chat `length`, Anthropic `max_tokens`, "
            "Responses `incomplete`). False reports such a reply as a normal end of turn, for agents that abort or "
            "retry a truncated turn (Codex retries a stream that ends without `response.completed`, which would "
            "re-send the turn); the trajectory is unaffected either way."
        },
    )

    def __post_init__(self) -> None:
        if self.max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        timeouts = ("request_timeout_s", "body_timeout_s", "queue_timeout_s", "keepalive_interval_s",
                    "shutdown_timeout_s")
        for name in timeouts:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.max_pending_per_rollout < 1:
            raise ValueError("max_pending_per_rollout must be at least 1")
        if self.stream_chunk_chars < 1:
            raise ValueError("stream_chunk_chars must be at least 1")
