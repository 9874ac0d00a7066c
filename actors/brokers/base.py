"""The broker interface every adapter implements (paper, dhan), and its typed errors.

Adapters translate their transport's failures once, here, into errors classified by what the caller
should do: TemporaryBrokerError (retry later: rate limit, 5xx, network), PermanentBrokerError (bad
request, auth: needs an operator or a different request), AmbiguousSubmitError (a submit whose outcome
is unknown: look the order up by correlationId before any resend).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from core.orders import BrokerOrder, BrokerPosition, BrokerTrade, OrderRequest

__all__ = [
    "AmbiguousSubmitError",
    "Broker",
    "BrokerError",
    "OrderNotFound",
    "OrderUpdateListener",
    "PermanentBrokerError",
    "TemporaryBrokerError",
]


class BrokerError(Exception):
    """Base of every broker failure; `code` is the broker's code where it gave one (DH-904, 805, ...)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class TemporaryBrokerError(BrokerError):
    """Retry later: rate limit, server error, network."""


class PermanentBrokerError(BrokerError):
    """Retrying the same request will not help: rejected input, auth, account."""


class AmbiguousSubmitError(TemporaryBrokerError):
    """The submit may or may not have reached the broker (timeout, 5xx): resolve by correlationId first."""


class OrderNotFound(BrokerError):
    """The broker does not know this order (or not yet: Dhan answers 404 while an order is in TRANSIT)."""


OrderUpdateListener = Callable[[BrokerOrder], None]


class Broker(Protocol):
    """Blocking calls with bounded timeouts; they run inside the executor / reconciler actors only."""

    name: str

    def place(self, request: OrderRequest) -> BrokerOrder: ...

    def cancel(self, order_id: str) -> BrokerOrder: ...

    def modify(self, order_id: str, qty: int, price: float, trigger_price: float = 0.0) -> BrokerOrder:
        """qty is the order's TOTAL quantity; a trigger_price > 0 keeps (or makes) it a stop-loss order."""
        ...

    def get_order(self, order_id: str) -> BrokerOrder: ...

    def find_by_correlation_id(self, correlation_id: str) -> BrokerOrder | None: ...

    def orders(self) -> list[BrokerOrder]: ...

    def positions(self) -> list[BrokerPosition]: ...

    def trades(self) -> list[BrokerTrade]: ...

    def subscribe_order_updates(self, listener: OrderUpdateListener) -> None:
        """Push updates (Dhan's order-update websocket; the paper broker's fills) to listener."""

    def close(self) -> None: ...
