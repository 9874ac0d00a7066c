"""The fake Dhan order-update websocket: takes the login frame, then pushes order_alert JSON messages.

A login with an unknown, expired or superseded token is closed (4001); a logged-in connection whose
token stops being valid is closed the same way (Dhan's behaviour here is not documented: a guess).
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from tests.fakedhan.tokens import FakeTokens

__all__ = ["FakeOrderUpdates"]


class FakeOrderUpdates:
    def __init__(self, client_id: str = "1000000001", access_token: str = "fake-token",
                 tokens: FakeTokens | None = None) -> None:
        self.client_id = client_id
        self.access_token = access_token
        self.tokens = tokens if tokens is not None else FakeTokens(client_id, access_token)
        self.tokens.add_listener(self._token_died)
        self._tokens_of: dict[int, str] = {}  # id(conn) -> the token it logged in with
        self.logins: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self._conns: list[ServerConnection] = []
        self._cond = threading.Condition()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeOrderUpdates:
        self._server = serve(self._handle, "127.0.0.1", 0, close_timeout=1, ping_interval=None)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-dhan-orders",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            for conn in self._live():
                threading.Thread(target=conn.close, daemon=True).start()
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(2.0)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}"

    def wait_for_logins(self, count: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.logins) >= count and len(self._conns) > 0, timeout)

    def wait_until_no_clients(self, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._conns, timeout)

    def push(self, message: dict[str, Any]) -> int:
        """Send one JSON message to every logged-in connection; returns how many got it."""
        text = json.dumps(message)
        sent = 0
        for conn in self._live():
            try:
                conn.send(text)
                sent += 1
            except (ConnectionClosed, OSError):
                pass
        with self._cond:
            self.sent.append(message)
        return sent

    def drop_connections(self) -> int:
        """Cut every connection without a close frame."""
        conns = self._live()
        for conn in conns:
            try:
                conn.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.socket.close()
        return len(conns)

    def _token_died(self, token: str, why: str) -> None:
        with self._cond:
            doomed = [c for c in self._conns if self._tokens_of.get(id(c)) == token]
        for conn in doomed:
            threading.Thread(target=conn.close, kwargs={"code": 4001, "reason": f"token {why}"},
                             daemon=True).start()

    def _live(self) -> list[ServerConnection]:
        with self._cond:
            return list(self._conns)

    def _handle(self, conn: ServerConnection) -> None:
        try:
            login = json.loads(conn.recv(timeout=5))
            req = login.get("LoginReq") or {}
            token = str(req.get("Token"))
            ok = req.get("MsgCode") == 42 and str(req.get("ClientId")) == self.client_id \
                and self.tokens.check(token) is None
            with self._cond:
                self.logins.append(login)
                if ok:
                    self._conns.append(conn)
                    self._tokens_of[id(conn)] = token
                self._cond.notify_all()
            if not ok:
                conn.close(code=4001, reason="authentication failed")
                return
            for _ in conn:  # the client sends nothing more; keep the socket open until it goes
                pass
        except (ConnectionClosed, OSError, ValueError, TimeoutError):
            pass
        finally:
            with self._cond:
                if conn in self._conns:
                    self._conns.remove(conn)
                self._tokens_of.pop(id(conn), None)
                self._cond.notify_all()
