"""The fake Dhan live market feed v2 (websockets sync server on 127.0.0.1, free port).

Accepts /?version=2&token=...&clientId=...&authType=2, records every JSON request (subscribe 15/17/21,
unsubscribe 16/18/22, disconnect 12) and tolerates the client's binary frames. Each subscribe is
answered with a prev-close packet (code 6) per instrument, as Dhan does. The test pushes ticks, which go
out ONE PACKET PER FRAME in the layout the subscription asked for (15 ticker, 17 quote, 21 full); it can
drop the connection abruptly or send a disconnect packet (code 50) with a reason.

Tokens come from the shared FakeTokens: an expired or superseded (renewed, revoked) token is refused at
connect with disconnect 807, and a connection whose token stops being valid gets 807 and is closed; an
unknown token gets 809 and a wrong client id 808, as before.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from tests.fakedhan import packets
from tests.fakedhan.tokens import FakeTokens

__all__ = ["FakeMarketFeed", "Subscription"]

SEGMENT_CODES = {"IDX_I": 0, "NSE_EQ": 1, "NSE_FNO": 2, "NSE_CURRENCY": 3, "BSE_EQ": 4, "MCX_COMM": 5,
                 "BSE_CURRENCY": 7, "BSE_FNO": 8}


@dataclass
class Subscription:
    request_code: int
    instruments: list[tuple[str, str]]  # (ExchangeSegment, SecurityId) as sent
    connection: int  # which connection (0 = the first ever accepted)
    at: float


@dataclass
class _Client:
    index: int
    conn: ServerConnection
    token: str = ""
    modes: dict[tuple[str, int], int] = field(default_factory=dict)  # (segment, id) -> request code
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, frame: bytes) -> bool:
        try:
            with self.lock:
                self.conn.send(frame)
            return True
        except (ConnectionClosed, OSError):
            return False


class FakeMarketFeed:
    def __init__(self, client_id: str = "1000000001", access_token: str = "fake-token",
                 tokens: FakeTokens | None = None) -> None:
        self.client_id = client_id
        self.access_token = access_token
        self.tokens = tokens if tokens is not None else FakeTokens(client_id, access_token)
        self.tokens.add_listener(self._token_died)
        self.token_disconnects = 0  # connections closed with 807 because their token died
        self.connect_paths: list[str] = []
        self.subscriptions: list[Subscription] = []
        self.unsubscriptions: list[Subscription] = []
        self.disconnect_requests = 0
        self.binary_frames: list[bytes] = []
        self._clients: list[_Client] = []
        self._accepted = 0
        self._cond = threading.Condition()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> FakeMarketFeed:
        self._server = serve(self._handle, "127.0.0.1", 0, close_timeout=1, ping_interval=None)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-dhan-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.drop_connections()
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(2.0)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}"

    # -- what the test scripts -------------------------------------------------------------------------

    def wait_for_subscriptions(self, count: int, timeout: float = 5.0) -> bool:
        """True once `count` subscribe messages (in total, over all connections) have arrived."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.subscriptions) >= count, timeout)

    def wait_for_connections(self, count: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._accepted >= count, timeout)

    def wait_until_no_clients(self, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._clients, timeout)

    @property
    def live_connections(self) -> int:
        with self._cond:
            return len(self._clients)

    def push_tick(self, security_id: int, ltp: float, ltt: int | None = None, volume: int = 0,
                  segment: str = "IDX_I") -> int:
        """Send one packet to every connection subscribed to the instrument; returns how many got it."""
        ltt = packets.ist_epoch_now() if ltt is None else ltt
        code = SEGMENT_CODES[segment]
        sent = 0
        for client in self._live():
            if self.tokens.check(client.token) is not None:
                continue  # expired under a live connection: the listener has sent it 807
            mode = client.modes.get((segment, int(security_id)))
            if mode is None:
                continue
            if mode == 15:
                frame = packets.ticker_packet(code, security_id, ltp, ltt)
            elif mode == 17:
                frame = packets.quote_packet(code, security_id, ltp, ltt, volume)
            else:
                frame = packets.full_packet(code, security_id, ltp, ltt, volume)
            sent += client.send(frame)
        return sent

    def push_raw(self, frame: bytes) -> int:
        return sum(client.send(frame) for client in self._live())

    def drop_connections(self) -> int:
        """Cut every connection without a close frame (network failure as the client sees it)."""
        clients = self._live()
        for client in clients:
            try:
                client.conn.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            client.conn.socket.close()
        return len(clients)

    def send_disconnect(self, reason: int) -> int:
        """Send Dhan's disconnect packet (code 50, e.g. 805 / 807) and close, as the real server does."""
        clients = self._live()
        for client in clients:
            client.send(packets.disconnect_packet(reason))
            threading.Thread(target=client.conn.close, daemon=True).start()
        return len(clients)

    def _token_died(self, token: str, why: str) -> None:
        for client in self._live():
            if client.token == token:
                client.send(packets.disconnect_packet(807))
                with self._cond:
                    self.token_disconnects += 1
                threading.Thread(target=client.conn.close, daemon=True).start()

    # -- the connection handler ------------------------------------------------------------------------

    def _live(self) -> list[_Client]:
        with self._cond:
            return list(self._clients)

    def _handle(self, conn: ServerConnection) -> None:
        request = conn.request
        path = request.path if request is not None else ""
        query = parse_qs(urlsplit(path).query)
        with self._cond:
            self.connect_paths.append(path)
            client = _Client(self._accepted, conn)
            self._accepted += 1
            self._cond.notify_all()

        def arg(name: str) -> str:
            return (query.get(name) or [""])[0]

        client.token = arg("token")
        why = self.tokens.check(client.token)
        if arg("version") != "2" or arg("authType") != "2" or arg("clientId") != self.client_id \
                or why is not None:
            reason = 807 if why in ("expired", "revoked") else 809 if why is not None else 808
            client.send(packets.disconnect_packet(reason))
            conn.close()
            return
        with self._cond:
            self._clients.append(client)
        try:
            for message in conn:
                if isinstance(message, bytes):
                    with self._cond:
                        self.binary_frames.append(message)
                    continue
                self._on_request(client, json.loads(message))
        except (ConnectionClosed, OSError, ValueError):
            pass
        finally:
            with self._cond:
                if client in self._clients:
                    self._clients.remove(client)
                self._cond.notify_all()

    def _on_request(self, client: _Client, request: dict[str, Any]) -> None:
        code = int(request.get("RequestCode", 0))
        instruments = [(str(i.get("ExchangeSegment")), str(i.get("SecurityId")))
                       for i in request.get("InstrumentList") or []]
        record = Subscription(code, instruments, client.index, time.monotonic())
        if code in (15, 17, 21):
            for segment, sid in instruments:
                client.modes[(segment, int(sid))] = code
            for segment, sid in instruments:
                client.send(packets.prev_close_packet(SEGMENT_CODES.get(segment, 0), int(sid), 100.0, 0))
            with self._cond:
                self.subscriptions.append(record)
                self._cond.notify_all()
        elif code in (16, 18, 22):
            for segment, sid in instruments:
                client.modes.pop((segment, int(sid)), None)
            with self._cond:
                self.unsubscriptions.append(record)
        elif code == 12:
            with self._cond:
                self.disconnect_requests += 1
