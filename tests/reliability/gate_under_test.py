"""A real gate on loopback for the reliability tests: its own loop thread, a worker that answers every call, and a
record of everything the gate logged (for the secret scan)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from dataclasses import dataclass, field

from control_plane import GateConfig, RolloutClosed, RolloutHandle
from tests.support.background_gate import BackgroundGate

TOOL_REPLY = {"content": "checking", "tool_calls": [{"id": "call_1", "function": {
    "name": "bash", "arguments": {"command": "ls"}}}]}

# The wire format of each chat route, and a minimal valid body for it.
ROUTES = {
    "chat/completions": {"model": "policy", "messages": [{"role": "user", "content": "hi"}]},
    "messages": {"model": "policy", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
    "responses": {"model": "policy", "input": "hi"},
}


class LogRecorder(logging.Handler):
    """Every record any logger emits while installed, formatted (the secret scan reads them)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name} {record.levelname} {record.getMessage()}"
        if record.exc_info:
            text += " " + logging.Formatter().formatException(record.exc_info)
        with self._lock:
            self.lines.append(text)
            if record.levelno >= logging.ERROR:
                self.errors.append(text)


@dataclass
class GateUnderTest:
    gate: BackgroundGate
    rollouts: dict[str, RolloutHandle] = field(default_factory=dict)
    answered: int = 0

    @property
    def url(self) -> str:
        return self.gate.url

    def open(self, rollout_id: str) -> RolloutHandle:
        rollout = self.gate.open_rollout(rollout_id)
        self.rollouts[rollout_id] = rollout
        self.gate.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._answer_forever(rollout)))
        return rollout

    async def _answer_forever(self, rollout: RolloutHandle) -> None:
        """The worker's side: answer every call at once, alternately with a tool call and with text."""
        while True:
            try:
                request = await rollout.next_request(timeout=None)
            except RolloutClosed:
                return
            reply = TOOL_REPLY if self.answered % 2 else {"content": "done"}
            await request.reply(reply, finish_reason="tool_calls" if self.answered % 2 else "stop",
                                usage={"prompt_tokens": 3, "completion_tokens": 2})
            self.answered += 1


def start_gate(**config_fields) -> tuple[GateUnderTest, bytes]:
    secret = secrets.token_bytes(32)
    gate = BackgroundGate(config=GateConfig(**config_fields), secret=secret, call_timeout_s=30)
    gate.start()
    return GateUnderTest(gate), secret
