"""Owner leases: which trader process manages a trade when several run on one database.

A trade's lease is taken in the same transaction as its first journal step (the entry gate) or when the
reconciler adopts it, renewed by the reconciler's heartbeat, and dropped when the trade ends. A process
manages only the trades it holds the lease of; one whose owner stops renewing (killed, cut off) is adopted
by another after `reconcile.lease_ttl_seconds`. A process that finds a trade of its own gone from its
renewal (adopted elsewhere after it went quiet) stops managing it at once: two actors never run one trade.

The owner's name is stable across restarts (`reconcile.owner_id`, by default host:role:control_port), so a
restarted daemon takes its own trades back at once instead of waiting for its leases to expire.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from actors.clock import Clock
from storage.errors import StorageError
from storage.records import LeaseClaim
from storage.repositories import Storage
from telemetry.logs import get_logger

__all__ = ["TradeLeases", "default_owner_id"]

log = get_logger("mybot.leases")


def default_owner_id(role: str, control_port: int) -> str:
    """host:role:port names a daemon across its restarts; with an ephemeral port (0) only host:pid is unique."""
    host = socket.gethostname()
    return f"{host}:{role}:{control_port}" if control_port else f"{host}:pid{os.getpid()}"


@dataclass(frozen=True)
class TradeLeases:
    storage: Storage
    clock: Clock
    owner: str
    ttl: float

    def claim(self, pos_id: str) -> bool:
        """Take (or renew) the lease of pos_id; False while another owner's lease is live. Raises StorageError."""
        return self.storage.leases.claim(pos_id, self.owner, self.clock.now(), self.ttl)

    def claim_of(self, pos_id: str) -> LeaseClaim:
        """The claim of a new trade's lease, for the entry gate (taken in the same transaction as its first step)."""
        return LeaseClaim(pos_id, self.owner, self.clock.now(), self.ttl)

    def release(self, pos_id: str) -> None:
        """The trade ended: its lease goes (best effort: an ended trade is never adopted anyway)."""
        try:
            self.storage.leases.release(pos_id, self.owner)
        except StorageError as exc:
            log.event("LEASE_RELEASE_FAILED", f"{pos_id}: {exc}", level=20, pos_id=pos_id)

    def renew(self) -> set[str]:
        """Heartbeat every lease we hold; the pos_ids still ours. Raises StorageError."""
        return set(self.storage.leases.renew(self.owner, self.clock.now()))

    def adoptable(self) -> list[str]:
        """Live trades nobody manages: no lease, an expired one, or ours. Raises StorageError."""
        return self.storage.leases.adoptable(self.owner, self.clock.now(), self.ttl)

    def owner_of(self, pos_id: str) -> str | None:
        lease = self.storage.leases.owner_of(pos_id)
        return None if lease is None else lease.owner
