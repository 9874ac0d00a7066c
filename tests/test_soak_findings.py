"""What the soak (bench/soak.py) found, each reproduced through real parts: real PostgreSQL behind a TCP proxy the
test controls (and, for the trading findings, the trader runtime, its control API on a real socket, the paper
broker).
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

import pytest

from storage.errors import StorageUnavailable
from storage.opening import open_storage
from tests.support.waiting import eventually
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(90)

def _through(proxy: TcpProxy, pg_url: str) -> str:
    parts = urlsplit(pg_url)
    return pg_url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")


def test_calls_failing_while_another_call_probes_a_down_database_keep_a_short_message(pg_url: str) -> None:
    """The soak's log held 'database unreachable (another call is probing it): ' repeated hundreds of times
    in one line: each call that failed while another probed stored its own message as the last error, which
    the next one quoted. The message of such a failure stays the size of the outage's cause."""
    proxy = TcpProxy(*(lambda parts: (parts.hostname or "127.0.0.1", parts.port or 5432))(urlsplit(pg_url)))
    storage = open_storage(_through(proxy, pg_url), connect_timeout=2.0)
    try:
        storage.migrate()
        proxy.stop_accepting_and_cut("blackhole")
        with pytest.raises(StorageUnavailable):
            storage.ping()  # the gate closes: the database is known down
        before = proxy.accepted
        prober = threading.Thread(target=_ping_quietly, args=(storage,), daemon=True)
        prober.start()  # probes: its connection hangs in the blackhole for the connect timeout
        eventually(lambda: proxy.accepted > before, 5.0, message="the probe's connection reached the proxy")
        messages = []
        for _ in range(50):
            with pytest.raises(StorageUnavailable) as failed:
                storage.candles.last_ts("NIFTY")
            messages.append(str(failed.value))
        assert "another call is probing it" in messages[0]
        assert len(messages[-1]) == len(messages[0]) < 300, messages[-1][:400]
        proxy.resume()
        prober.join(timeout=10.0)
    finally:
        storage.close()
        proxy.close()


def _ping_quietly(storage: Any) -> None:
    try:
        storage.ping()
    except StorageUnavailable:
        pass
