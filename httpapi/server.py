"""A waitress server on its own thread that can be stopped from another thread (ordered shutdown).

Held-open sockets must not lock the operator out of the kill switch, flatten or health. An idle
connection costs waitress no worker thread (the event loop holds it), only a file descriptor and a place
under `connection_limit`; stock waitress stops accepting at that limit until its periodic cleanup closes
connections idle for `channel_timeout`, so ~200 idle sockets made the control port unreachable for a
minute. Here:
- the limit is high (`http.connection_limit`, default 1000, capped at a quarter of the open-files limit so
  two servers and the rest of the process never run out of descriptors);
- at the limit the server closes the longest-idle connections (no request in progress, no response
  pending) to make room, instead of refusing new ones: a flood of idle or half-sent requests can only push
  out its own oldest sockets, and a new connection that sends a request is served;
- the event loop uses poll(), not select(), which fails past descriptor 1024.
"""

from __future__ import annotations

import resource
import threading
import time
from typing import Any

from waitress.adjustments import Adjustments
from waitress.server import TcpWSGIServer

from httpapi.guard import SERVER_MAX_BODY_BYTES
from telemetry.logs import get_logger

__all__ = ["HttpServer", "connection_budget"]

log = get_logger("mybot.http")

SHED_LOG_INTERVAL_SECONDS = 10.0


def connection_budget(wanted: int) -> int:
    """`wanted`, capped at a quarter of the process's open-files limit (at least 16)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft // 4))


class _SheddingServer(TcpWSGIServer):  # type: ignore[misc]
    """Waitress's TCP server, but at the connection limit it closes the longest-idle connections."""

    name = "http"
    _shed_total = 0
    _shed_logged = 0
    _shed_logged_at = 0.0

    def readable(self) -> bool:
        # Runs on the event loop thread before each poll: marking channels will_close is how waitress's own
        # maintenance closes them (the loop closes them in this same pass), so the map is never touched here.
        if self.accepting and len(self._map) >= self.adj.connection_limit:
            self._shed_idle()
        return bool(super().readable())

    def _shed_idle(self) -> None:
        channels = list(self.active_channels.values())
        closing = sum(1 for channel in channels if channel.will_close)
        room = max(1, self.adj.connection_limit // 20)  # free a few at once: not one per accept
        excess = len(self._map) - self.adj.connection_limit + room - closing
        if excess <= 0:
            return
        idle = [channel for channel in channels
                if not channel.will_close and not channel.requests and not channel.total_outbufs_len]
        idle.sort(key=lambda channel: channel.last_activity)
        for channel in idle[:excess]:
            channel.will_close = True
        self._shed_total += min(excess, len(idle))
        now = time.monotonic()
        if now - self._shed_logged_at >= SHED_LOG_INTERVAL_SECONDS:
            log.event("HTTP_CONNECTIONS_SHED",
                      f"{self.name} API at its connection limit: closed "
                      f"{self._shed_total - self._shed_logged} idle connections to make room", level=30,
                      server=self.name, limit=self.adj.connection_limit, shed=self._shed_total - self._shed_logged)
            self._shed_logged, self._shed_logged_at = self._shed_total, now


class HttpServer:
    def __init__(self, app: Any, host: str, port: int, threads: int, name: str, *,
                 connection_limit: int = 1000) -> None:
        self.name = name
        self.connection_limit = connection_budget(connection_limit)
        adj = Adjustments(host=host, port=port, threads=threads, ident="mybot", clear_untrusted_proxy_headers=True,
                          channel_timeout=30, connection_limit=self.connection_limit, asyncore_use_poll=True,
                          max_request_body_size=SERVER_MAX_BODY_BYTES)
        self._server = _SheddingServer(app, adj=adj, sockinfo=adj.listen[0])
        self._server.name = name
        self.host = host
        self.port: int = self._server.effective_port
        self._thread = threading.Thread(target=self._run, name=f"http-{name}", daemon=True)
        self._stopped = threading.Event()

    def start(self) -> HttpServer:
        self._thread.start()
        log.event("HTTP_STARTED", f"{self.name} API on http://{self.host}:{self.port}",
                  server=self.name, port=self.port, host=self.host, connection_limit=self.connection_limit)
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        try:
            self._server.run()
        except OSError:
            pass  # the socket map was closed under the loop by stop()
        finally:
            self._stopped.set()

    def stop(self, timeout: float = 2.0) -> None:
        """Close the listening socket and open channels, then drain the worker threads."""
        server = self._server
        for channel in list(server._map.values()):
            if channel is not server:
                try:
                    channel.close()
                except OSError:
                    pass
        server.accepting = False
        try:
            server.pull_trigger()  # wake the select() now rather than after its 1 s timeout
        except OSError:
            pass
        server.close()  # closes the trigger and the listening socket: the loop's map empties, it ends
        server.task_dispatcher.shutdown(timeout=timeout)
        self._stopped.wait(0.2)  # the loop thread is a daemon: do not hold shutdown for it
        log.event("HTTP_STOPPED", f"{self.name} API stopped", server=self.name)
