"""ContractFeed: the contracts positions hold, kept on the live feed (actors.wiring.ContractWatch).

The trading side says `watch(symbol, owner)` when a trade on that contract is under way and
`unwatch(symbol, owner)` when it ends (owner = the trade's pos_id). The first owner puts the contract
on the feed, the last one to leave takes it off; symbols of `feed.symbols` are always on it and never
taken off. The wanted set lives in the feed's crash-only store (`FeedState.watched`), so a feed that
restarts subscribes it again; the feed actor is only told to look (`SyncContracts`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from actors.market_data.feed import FeedState, SyncContracts
from supervision.supervisor import ChildHandle

__all__ = ["ContractFeed"]


class ContractFeed:
    def __init__(self, feed: ChildHandle, state: FeedState, configured: Iterable[str]) -> None:
        self._feed = feed
        self._state = state
        self._configured = frozenset(configured)
        self._owners: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def watch(self, symbol: str, owner: str) -> None:
        if symbol in self._configured:
            return
        with self._lock:
            owners = self._owners.setdefault(symbol, set())
            first = not owners
            owners.add(owner)
            if first:
                self._state.watched = frozenset(self._owners)
        if first:
            self._feed.tell(SyncContracts())

    def unwatch(self, symbol: str, owner: str) -> None:
        with self._lock:
            owners = self._owners.get(symbol)
            if owners is None or owner not in owners:
                return
            owners.discard(owner)
            last = not owners
            if last:
                del self._owners[symbol]
                self._state.watched = frozenset(self._owners)
        if last:
            self._feed.tell(SyncContracts())

    def watched(self) -> dict[str, list[str]]:
        """symbol -> the owners holding it (status)."""
        with self._lock:
            return {symbol: sorted(owners) for symbol, owners in sorted(self._owners.items())}
