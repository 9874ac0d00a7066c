"""Fake alert receivers on loopback, over real sockets: a Telegram Bot API and a webhook that checks the
HMAC signature, plus a black hole (accepts connections, never answers: a dead webhook).

    telegram = FakeTelegram(token="123:abc").start()    # alerts.telegram_api_url = telegram.url
    telegram.messages.wait_count(1)                     # [{"chat_id", "text", ...}]
    webhook = FakeWebhook(secret="k").start()           # alerts.webhook_url = webhook.url
    webhook.alerts.wait_count(1)                        # [{"body": {...}, "verified": True, ...}]

`script` answers the n-th request (0-based) with (status, body); the default is 200 and an OK body.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from tests.support.collect import Collector

__all__ = ["BlackHole", "FakeTelegram", "FakeWebhook"]

Script = Callable[[int], tuple[int, dict[str, Any]]]


class _Server:
    def __init__(self, script: Script | None = None) -> None:
        self.script = script
        self.requests = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with owner._lock:
                    number = owner.requests
                    owner.requests += 1
                status, body = owner.answer(number)
                owner.record(self.path, dict(self.headers.items()), raw, status)
                payload = orjson.dumps(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def answer(self, number: int) -> tuple[int, dict[str, Any]]:
        if self.script is not None:
            return self.script(number)
        return 200, {"ok": True}

    def record(self, path: str, headers: dict[str, str], raw: bytes, status: int) -> None:
        raise NotImplementedError

    def start(self) -> Any:
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


class FakeTelegram(_Server):
    def __init__(self, token: str, script: Script | None = None) -> None:
        super().__init__(script)
        self.token = token
        self.url = f"http://127.0.0.1:{self.port}"
        self.messages: Collector[dict[str, Any]] = Collector()  # accepted sendMessage bodies
        self.refused: Collector[str] = Collector()  # paths of requests answered with an error

    def answer(self, number: int) -> tuple[int, dict[str, Any]]:
        status, body = super().answer(number)
        return status, ({"ok": True, "result": {"message_id": number}} if status == 200 else body)

    def record(self, path: str, headers: dict[str, str], raw: bytes, status: int) -> None:
        if path != f"/bot{self.token}/sendMessage":
            self.refused.add(path)
            return
        if status == 200:
            self.messages.add(orjson.loads(raw))
        else:
            self.refused.add(path)


class FakeWebhook(_Server):
    def __init__(self, secret: str = "", script: Script | None = None) -> None:
        super().__init__(script)
        self.secret = secret
        self.url = f"http://127.0.0.1:{self.port}/hooks/mybot"
        self.alerts: Collector[dict[str, Any]] = Collector()  # accepted deliveries
        self.attempts: Collector[dict[str, Any]] = Collector()  # every request, answered or not

    def record(self, path: str, headers: dict[str, str], raw: bytes, status: int) -> None:
        signature = headers.get("X-Mybot-Signature", "")
        expected = "sha256=" + hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest() if self.secret else ""
        delivery = {"path": path, "headers": headers, "body": orjson.loads(raw), "status": status,
                    "signature": signature, "verified": bool(signature) and hmac.compare_digest(signature, expected)}
        self.attempts.add(delivery)
        if status == 200:
            self.alerts.add(delivery)


class BlackHole:
    """A listening socket nobody accepts on: connections complete (the kernel's backlog), requests are
    never answered, so a client waits for its own timeout."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/dead"

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
