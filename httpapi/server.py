"""A waitress server on its own thread that can be stopped from another thread (ordered shutdown)."""

from __future__ import annotations

import threading
from typing import Any

from waitress.server import create_server

from telemetry.logs import get_logger

__all__ = ["HttpServer"]

log = get_logger("mybot.http")


class HttpServer:
    def __init__(self, app: Any, host: str, port: int, threads: int, name: str) -> None:
        self.name = name
        self._server = create_server(app, host=host, port=port, threads=threads,
                                     ident="mybot", clear_untrusted_proxy_headers=True,
                                     channel_timeout=30, connection_limit=200)
        self.host = host
        self.port: int = self._server.effective_port  # type: ignore[union-attr]
        self._thread = threading.Thread(target=self._run, name=f"http-{name}", daemon=True)
        self._stopped = threading.Event()

    def start(self) -> HttpServer:
        self._thread.start()
        log.event("HTTP_STARTED", f"{self.name} API on http://{self.host}:{self.port}",
                  server=self.name, port=self.port)
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
        for channel in list(server._map.values()):  # type: ignore[union-attr]
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
