"""A toggleable TCP forwarder on 127.0.0.1:<free port> -> target, to make a shared server "go away".

    proxy = TcpProxy("127.0.0.1", 5432)
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
    proxy.stop_accepting_and_cut()             # live connections closed; new ones blackholed
    proxy.stop_accepting_and_cut("refuse")     # ... or new ones reset at once
    proxy.resume()
    proxy.close()

Blackhole: a new connection is accepted but nothing is forwarded or answered (like a host that stopped
responding: the client waits for its own timeout). Refuse: a new connection is reset immediately
(like a server that is down: the client fails at once). The listening port stays the same throughout.
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Literal

__all__ = ["TcpProxy"]

Mode = Literal["forward", "blackhole", "refuse"]


def _reset(sock: socket.socket) -> None:
    """Close with RST rather than FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._mode: Mode = "forward"
        self._live: set[socket.socket] = set()      # both ends of every forwarded connection
        self._held: set[socket.socket] = set()      # blackholed client sockets
        self._closed = threading.Event()
        self.accepted = 0
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"tcp-proxy-{self.port}", daemon=True)
        self._acceptor.start()

    @property
    def mode(self) -> Mode:
        return self._mode

    def stop_accepting_and_cut(self, mode: Literal["blackhole", "refuse"] = "blackhole") -> None:
        """Close every live connection; from now on new connections are blackholed or refused."""
        with self._lock:
            self._mode = mode
            live, self._live = self._live, set()
        for sock in live:
            _shut(sock)

    def resume(self) -> None:
        """Forward again; blackholed connections are closed (their clients see an error and retry)."""
        with self._lock:
            self._mode = "forward"
            held, self._held = self._held, set()
        for sock in held:
            _shut(sock)

    def close(self) -> None:
        self._closed.set()
        self._acceptor.join(timeout=2.0)
        self._listener.close()
        with self._lock:
            socks = self._live | self._held
            self._live, self._held = set(), set()
        for sock in socks:
            _shut(sock)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self.accepted += 1
            with self._lock:
                mode = self._mode
                if mode == "blackhole":
                    self._held.add(client)
                    continue
            if mode == "refuse":
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5.0)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._mode != "forward":  # cut while we were connecting
                    _reset(client)
                    upstream.close()
                    continue
                self._live.update((client, upstream))
            for source, sink, from_server in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(source, sink, from_server, upstream), daemon=True,
                                 name=f"tcp-proxy-{self.port}-pump").start()

    def _relay(self, data: bytes, from_server: bool, upstream: socket.socket) -> bool:
        """Whether this chunk goes on (a subclass may lose some: answers of the server, say)."""
        return True

    def _pump(self, source: socket.socket, sink: socket.socket, from_server: bool, upstream: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if self._relay(data, from_server, upstream):
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._live.discard(source)
                self._live.discard(sink)
            _shut(source)
            _shut(sink)
