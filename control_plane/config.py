"""Configuration of the interception gate."""

from __future__ import annotations

from dataclasses import dataclass, field

from intercept_common.errors import ConfigError


@dataclass
class GateConfig:
    """Limits and timings of the interception gate.

    Every wait the gate performs is bounded by one of these fields, so a silent worker or a stalled client can never
    hold a connection forever.
    """

    _argument_group_name = "Gate: limits and timings of the interception gate (control_plane.config.GateConfig)"
    _config_section = "gate"  # its YAML section (intercept_common.config_tree)

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
    max_pending_total: int = field(
        default=4096,
        metadata={"help": "Most chat requests queued or in progress across all rollouts; more get HTTP 503 with "
                  "Retry-After (a flood on one gate cannot grow its memory without bound)."},
    )
    rollout_requests_per_s: float = field(
        default=20.0,
        metadata={"help": "Sustained request rate one rollout may make (every authenticated route); past its burst, "
                  "HTTP 429 with Retry-After. Agents call a few times a minute: this stops a runaway or hostile "
                  "sandbox without touching other rollouts."},
    )
    rollout_request_burst: int = field(
        default=40, metadata={"help": "Requests one rollout may make at once before its rate applies."}
    )
    stream_chunk_chars: int = field(
        default=64,
        metadata={"help": "Characters of content (or tool-call arguments) per streamed delta chunk."},
    )
    shutdown_timeout_s: float = field(
        default=5.0,
        metadata={"help": "How long `stop()` waits for in-flight HTTP handlers to finish after failing them."},
    )
    report_truncation: bool | None = field(
        default=None,
        metadata={
            "help": "Tell the agent when a reply was cut by the token limit (chat `length`, Anthropic `max_tokens`, "
            "Responses `incomplete`, Gemini `MAX_TOKENS`). Unset (the default): as the rollout's agent declares "
            "(each launcher's `report_truncation`: off for the CLIs that abort or retry a cut turn: codex, "
            "claude-code, qwen-code; on for the others). true/false: the same for every agent, overriding "
            "that. Off reports a cut reply as a normal end of turn; the trajectory is unaffected either way."
        },
    )

    def __post_init__(self) -> None:
        if self.max_body_bytes <= 0:
            raise ConfigError("max_body_bytes must be positive")
        timeouts = ("request_timeout_s", "body_timeout_s", "queue_timeout_s", "keepalive_interval_s",
                    "shutdown_timeout_s")
        for name in timeouts:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive")
        if self.max_pending_per_rollout < 1 or self.max_pending_total < 1:
            raise ConfigError("max_pending_per_rollout and max_pending_total must be at least 1")
        if not self.rollout_requests_per_s > 0 or self.rollout_request_burst < 1:
            raise ConfigError("rollout_requests_per_s must be positive and rollout_request_burst at least 1")
        if self.stream_chunk_chars < 1:
            raise ConfigError("stream_chunk_chars must be at least 1")
