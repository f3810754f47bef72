"""What the gate hands out for each rollout: its own URL and key (the contract agents and episode runners receive)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RolloutEndpoint:
    """Where an agent reaches the policy: the rollout's own gate URL (ends in /v1), its own key and model name.

    `base_url` is a host-side URL on loopback; sandboxes that isolate the network relay it (design §7) and hand the
    agent their inner URL instead. The key never appears in `repr`.
    """

    rollout_id: str
    base_url: str
    api_key: str = field(repr=False)
    model: str
