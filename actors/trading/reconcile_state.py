"""What the reconciler keeps across its restarts, and the operator's acknowledgement of its incidents (called
from the control API's threads)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from actors.clock import Clock
from actors.trading.risk_guard import RiskGuard
from storage.errors import StorageError
from storage.repositories import Storage
from telemetry.logs import get_logger

__all__ = ["RECONCILE_STATE_KEY", "ReconcileState", "acknowledge"]

RECONCILE_STATE_KEY = "reconcile"


@dataclass
class ReconcileState:
    """Outlives reconciler restarts; read by the control API. `acknowledge` may be called from any thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    started_up: bool = False
    adopted: list[str] = field(default_factory=list)
    adopted_at: float = 0.0
    passes: int = 0
    failures: int = 0
    last_pass_at: float = 0.0
    last_error: str = ""
    missed_fills: int = 0
    first_seen: dict[str, float] = field(default_factory=dict)  # difference key -> monotonic first sighting
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)  # raised, not yet acknowledged
    accepted: dict[str, int] = field(default_factory=dict)  # symbol -> difference an operator accepted
    owners: dict[str, str] = field(default_factory=dict)  # correlation id -> pos_id (never changes)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"started_up": self.started_up, "passes": self.passes, "failures": self.failures,
                    "last_pass_at": self.last_pass_at or None, "last_error": self.last_error or None,
                    "missed_fills_applied": self.missed_fills, "adopted_at_start": list(self.adopted),
                    "incidents": list(self.incidents.values()), "accepted_differences": dict(self.accepted)}


def acknowledge(state: ReconcileState, storage: Storage, risk: RiskGuard, clock: Clock,
                who: str = "operator") -> dict[str, Any]:
    """Accept the differences as they are now, release the hold (any thread)."""
    with state.lock:
        incidents = list(state.incidents.values())
        for incident in incidents:
            symbol = incident.get("symbol")
            if symbol is not None:
                state.accepted[symbol] = int(incident["difference"])
        state.incidents.clear()
        state.first_seen.clear()
        accepted = dict(state.accepted)
    try:
        storage.bot_state.put(RECONCILE_STATE_KEY, {"accepted": accepted}, clock.now())
    except StorageError as exc:
        risk.set_reconciliation_hold(True, f"acknowledgement not saved: {exc}")
        raise
    released = risk.set_reconciliation_hold(False)
    get_logger("mybot.reconciler").event("RECONCILE_ACKNOWLEDGED", f"{len(incidents)} incidents acknowledged by "
                                         f"{who}; hold released", incidents=len(incidents), accepted=accepted,
                                         released=released, who=who,
                                         incident_ids=[i["incident_id"] for i in incidents if "incident_id" in i])
    return {"acknowledged": incidents, "accepted_differences": accepted, "hold_released": released}
