"""The interception gate: per-rollout OpenAI-compatible endpoints whose chat calls the rollout worker answers."""

from .background import BackgroundGate
from .config import GateConfig
from .errors import GateError, RolloutClosed
from .rollout import InterceptedRequest, RolloutHandle
from .server import InterceptionServer

__all__ = [
    "BackgroundGate",
    "GateConfig",
    "GateError",
    "InterceptedRequest",
    "InterceptionServer",
    "RolloutClosed",
    "RolloutHandle",
]
