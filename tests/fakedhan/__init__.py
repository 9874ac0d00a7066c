"""A fake Dhan for tests: REST v2, the live market feed v2 and the order-update socket, on real sockets.

    with FakeDhan() as fake:
        settings = Settings().replace(dhan=fake.dhan_settings())
        ...                                 # drive the real dhanhq SDK through actors.dhan
        fake.rest.requests_to("/optionchain")   # every request, with its arrival time
        fake.feed.push_tick(13, 25010.5, volume=1200)
        fake.state.fill(order_id, qty=75, price=101.5)

Servers bind 127.0.0.1 on free ports. Order status changes flow to the order-update socket by themselves.
"""

from __future__ import annotations

from typing import Any

from tests.fakedhan.feed import FakeMarketFeed, Subscription
from tests.fakedhan.orderupdates import FakeOrderUpdates
from tests.fakedhan.packets import IST_OFFSET, ist_epoch_now
from tests.fakedhan.rest import FakeDhanRest, Injection, RecordedRequest
from tests.fakedhan.state import FakeDhanState, FakeOrder, FakeOrderError

__all__ = [
    "IST_OFFSET",
    "FakeDhan",
    "FakeDhanRest",
    "FakeDhanState",
    "FakeMarketFeed",
    "FakeOrder",
    "FakeOrderError",
    "FakeOrderUpdates",
    "Injection",
    "RecordedRequest",
    "Subscription",
    "ist_epoch_now",
]


class FakeDhan:
    def __init__(self, client_id: str = "1000000001", access_token: str = "fake-token-0123456789",
                 *, option_chain_window: float = 3.0, transit_seconds: float = 0.0) -> None:
        self.client_id = client_id
        self.access_token = access_token
        self.state = FakeDhanState(client_id=client_id, transit_seconds=transit_seconds)
        self.rest = FakeDhanRest(self.state, client_id, access_token)
        self.rest.set_option_chain_limit(option_chain_window)
        self.feed = FakeMarketFeed(client_id, access_token)
        self.order_updates = FakeOrderUpdates(client_id, access_token)
        self.state.add_order_listener(self.order_updates.push)

    def start(self) -> FakeDhan:
        self.rest.start()
        self.feed.start()
        self.order_updates.start()
        return self

    def stop(self) -> None:
        self.state.close()
        self.order_updates.stop()
        self.feed.stop()
        self.rest.stop()

    def __enter__(self) -> FakeDhan:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def dhan_settings(self, **overrides: Any) -> dict[str, Any]:
        """The `dhan` settings section pointing at this fake (for Settings().replace(dhan=...))."""
        return {"api_base_url": self.rest.base_url, "feed_url": self.feed.url,
                "order_update_url": self.order_updates.url, "client_id": self.client_id,
                "access_token": self.access_token, **overrides}
