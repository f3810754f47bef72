"""`--cluster ray[:ADDRESS]`: what the value means, and the connection to the Ray cluster (docs/scale.md).

The command's process owns the connection (`connect` before anything else starts, `ClusterConnection.close` at
the end); `RayNodes` only places and stops actors on it. Every failure here is one line before any rollout starts:
Ray itself would wait minutes for an address that does not answer, so the address is probed first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from intercept_common.errors import ConfigError, UserError

# The custom resource a machine advertises to take rollouts: how many sandboxes (agent + container) it runs at
# once. `ray start ... --resources '{"sandbox_slots": 8}'`. One rollout node per machine holds all of its slots.
SLOT_RESOURCE = "sandbox_slots"
# Where `ray start --head` records the address of the cluster this machine belongs to (Ray's own `address="auto"`).
_CURRENT_CLUSTER_FILE = Path("/tmp/ray/ray_current_cluster")
_PROBE_TIMEOUT_S = 5.0


class ClusterError(RuntimeError, UserError):
    """The Ray cluster cannot be used: not installed, not reachable, or no machine offers sandbox slots."""


@dataclass(frozen=True)
class ClusterSpec:
    """A parsed `--cluster`: `ray` (a Ray instance started for this run, on this machine) or `ray:ADDRESS`
    (`auto`: the cluster this machine joined with `ray start`; else the head's `HOST:PORT`)."""

    address: str | None

    @classmethod
    def parse(cls, value: str) -> ClusterSpec:
        kind, _, address = value.partition(":")
        if kind != "ray" or (_ and not address.strip()):
            raise ConfigError(f"cluster must be 'ray' or 'ray:ADDRESS' (ADDRESS: auto or HOST:PORT), got {value!r}")
        address = address.strip() or None
        if address not in (None, "auto"):
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"cluster address {address!r} is not auto or HOST:PORT")
        return cls(address)


@dataclass
class ClusterConnection:
    """This process's connection to Ray; `started_here`: the Ray instance is this run's own and ends with it."""

    address: str
    started_here: bool

    def slot_nodes(self) -> list[dict]:
        """The live machines advertising sandbox slots (Ray's node table entries)."""
        import ray

        return [node for node in ray.nodes() if node.get("Alive") and node["Resources"].get(SLOT_RESOURCE, 0) >= 1]

    def close(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def connect_cluster(value: str | None, local_slots: int) -> ClusterConnection | None:
    """`--cluster`'s connection for a command (None without the flag: nothing of Ray is imported)."""
    return connect(ClusterSpec.parse(value), local_slots=local_slots) if value else None


@contextlib.contextmanager
def closing_cluster(connection: ClusterConnection | None):
    """Close the connection (or stop this run's own Ray) when the block ends, on every path."""
    try:
        yield connection
    finally:
        if connection is not None:
            connection.close()


def connect(spec: ClusterSpec, *, local_slots: int) -> ClusterConnection:
    """Connect (or, for plain `ray`, start a one-machine Ray with `local_slots` sandbox slots) and check that some
    machine offers sandbox slots; one-line `ClusterError`s otherwise."""
    try:
        import ray
    except ImportError:
        raise ClusterError("--cluster ray needs Ray: pip install 'intercept-rl[ray]' (the locked extra)") from None
    if spec.address is None:
        ray.init(num_cpus=os.cpu_count(), resources={SLOT_RESOURCE: local_slots}, include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False, configure_logging=False)
        return ClusterConnection(ray.get_runtime_context().gcs_address, started_here=True)
    address = _current_cluster() if spec.address == "auto" else spec.address
    _probe(address)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError) as exc:
        raise ClusterError(f"cannot join the Ray cluster at {address}: {str(exc).splitlines()[0][:200]}") from None
    connection = ClusterConnection(address, started_here=False)
    if not connection.slot_nodes():
        connection.close()
        raise ClusterError(f"no machine of the Ray cluster at {address} offers {SLOT_RESOURCE}: start each rollout "
                           f"machine with ray start --address {address} --resources '{{\"{SLOT_RESOURCE}\": N}}'")
    return connection


def _current_cluster() -> str:
    address = os.environ.get("RAY_ADDRESS") or (
        _CURRENT_CLUSTER_FILE.read_text().strip() if _CURRENT_CLUSTER_FILE.is_file() else "")
    if not address:
        raise ClusterError("--cluster ray:auto: no Ray cluster runs on this machine (start one with ray start --head "
                           f"--resources '{{\"{SLOT_RESOURCE}\": N}}', or give ray:HOST:PORT)")
    return address


def _probe(address: str) -> None:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=_PROBE_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Ray cluster's head at {address} ({type(exc).__name__}): is it "
                           "running? (ray start --head)") from None
