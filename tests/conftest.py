"""Shared fixtures (keep this file tiny)."""

import pytest

from control_plane import GateConfig, InterceptionServer


@pytest.fixture
async def make_gate():
    """Factory: `await make_gate(**GateConfig fields)` → a started InterceptionServer on loopback, stopped at teardown."""
    servers = []

    async def make(**config_fields) -> InterceptionServer:
        server = InterceptionServer(host="127.0.0.1", port=0, config=GateConfig(**config_fields))
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()
