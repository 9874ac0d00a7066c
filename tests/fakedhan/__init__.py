"""A fake Dhan for tests: REST v2, the live market feed v2 and the order-update socket, on real sockets.

    with FakeDhan() as fake:
        settings = Settings().replace(dhan=fake.dhan_settings())
        ...                                 # drive the real dhanhq SDK through actors.dhan
        fake.rest.requests_to("/optionchain")   # every request, with its arrival time
        fake.feed.push_tick(13, 25010.5, volume=1200)
        fake.state.fill(order_id, qty=75, price=101.5)

Servers bind 127.0.0.1 on free ports. Order status changes flow to the order-update socket by themselves.

    fake.scrip_master_url                   # the compact CSV of fake.state.instruments (NIFTY lot 65)
    fake.tokens.expire(fake.access_token)   # REST 401 DH-901, feed disconnect 807
    fake.rest.root_url                      # DhanLogin.AUTH_BASE_URL for /app/generateAccessToken
    totp(fake.tokens.totp_secret, time.time())

The REST server, the feed and the order-update socket share one FakeTokens: a token renewed through
/v2/RenewToken or made expired stops working on all three at once.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from tests.fakedhan.feed import FakeMarketFeed, Subscription
from tests.fakedhan.orderupdates import FakeOrderUpdates
from tests.fakedhan.packets import IST_OFFSET, ist_epoch_now
from tests.fakedhan.rest import FakeDhanRest, Injection, RawBody, RecordedRequest
from tests.fakedhan.scripmaster import compact_csv, fake_master
from tests.fakedhan.state import FakeDhanState, FakeOrder, FakeOrderError
from tests.fakedhan.tokens import FakeTokens, totp, unsigned_jwt

__all__ = [
    "IST_OFFSET",
    "FakeDhan",
    "FakeDhanRest",
    "FakeDhanState",
    "FakeMarketFeed",
    "FakeOrder",
    "FakeOrderError",
    "FakeOrderUpdates",
    "FakeTokens",
    "Injection",
    "RawBody",
    "RecordedRequest",
    "Subscription",
    "ist_epoch_now",
    "totp",
    "unsigned_jwt",
]


class FakeDhan:
    def __init__(self, client_id: str = "1000000001", access_token: str = "fake-token-0123456789",
                 *, option_chain_window: float = 3.0, transit_seconds: float = 0.0,
                 token_lifetime: float = 86_400.0, renew_field: str = "token",
                 master_day: _dt.date | None = None) -> None:
        """`access_token` that is a JWT expires at its `exp`; the default plain token never expires.
        `master_day` dates the scrip master's expiries (default: today, so they are always live)."""
        self.client_id = client_id
        self.access_token = access_token
        self.tokens = FakeTokens(client_id, access_token, lifetime=token_lifetime)
        self.state = FakeDhanState(client_id=client_id, transit_seconds=transit_seconds)
        self.rest = FakeDhanRest(self.state, client_id, access_token, tokens=self.tokens,
                                 renew_field=renew_field)
        self.rest.set_option_chain_limit(option_chain_window)
        self.feed = FakeMarketFeed(client_id, access_token, tokens=self.tokens)
        self.order_updates = FakeOrderUpdates(client_id, access_token, tokens=self.tokens)
        self.state.add_order_listener(self.order_updates.push)
        self._master_day = master_day

    def set_scrip_master(self, instruments: list[Any], *, list_expiries: bool = True) -> None:
        """Serve these instruments (core.instruments.Instrument) as the compact CSV; with `list_expiries`
        the expiry lists and chains come from them too (see FakeDhanState.set_scrip_master).

        Without a call, start() serves `fake_master(master_day or today)` (NIFTY lot 65, tick 0.05) as
        the CSV and for order details, but leaves the scripted expiry lists (2024 dates) alone."""
        self.state.set_scrip_master(instruments, list_expiries=list_expiries)
        self.rest.set_scrip_master(compact_csv(instruments))

    @property
    def scrip_master_url(self) -> str:
        return self.rest.scrip_master_url

    def start(self) -> FakeDhan:
        if not self.state.instruments:
            today_ist = _dt.datetime.now(_dt.timezone(_dt.timedelta(hours=5, minutes=30))).date()
            self.set_scrip_master(fake_master(self._master_day or today_ist), list_expiries=False)
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
                "access_token": self.access_token, "scrip_master_url": self.scrip_master_url, **overrides}
