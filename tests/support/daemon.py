"""A real `mybot run` process for end-to-end tests: sim feed, paper broker, SQLite in a temp dir, both HTTP
servers on free ports, an all-day risk session (00:00-24:00, square-off 24:00), a known control token.

    with LiveDaemon(tmp_path) as daemon:
        requests.get(daemon.control + "/v1/health")

Its stdout (JSON lines) is drained by a thread into `lines`, so the pipe never fills; the ports are read
from the HTTP_STARTED lines. Stopped with SIGTERM (exit 0 expected), killed if it hangs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from actors.instruments import snapshot_book
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "dashboard-test-token-0123456789"


class LiveDaemon:
    def __init__(self, workdir: Path, role: str = "all", **env: str) -> None:
        self.workdir = workdir
        self.role = role
        self.extra_env = env
        self.lines: list[dict[str, Any]] = []
        self.ports: dict[str, int] = {}
        self._ports_known = threading.Event()
        self.proc: subprocess.Popen[str] | None = None
        self.token = TOKEN
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    @property
    def control(self) -> str:
        return f"http://127.0.0.1:{self.ports['control']}"

    @property
    def mds(self) -> str:
        return f"http://127.0.0.1:{self.ports['mds']}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MYBOT_")}
        env.update({
            "PYTHONPATH": str(ROOT), "MYBOT_HTTP_MDS_PORT": "0", "MYBOT_HTTP_CONTROL_PORT": "0",
            "MYBOT_STORAGE_URL": f"sqlite:///{self.workdir / 'mybot.db'}",
            "MYBOT_SECRETS_DIR": str(self.workdir / "secrets"), "MYBOT_CONTROL_TOKEN": TOKEN,
            "MYBOT_FEED_SOURCE": "sim", "MYBOT_BROKER_KIND": "paper",
            "MYBOT_RISK_SESSION_START": "00:00", "MYBOT_RISK_SESSION_END": "24:00",
            "MYBOT_RISK_SQUARE_OFF_TIME": "24:00", "MYBOT_CALENDAR_ENABLED": "false",
        })
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30.0) -> LiveDaemon:
        self.proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--role", self.role],
                                     cwd=self.workdir, env=self.env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._drain, name="daemon-stdout", daemon=True).start()
        wanted = {"control"} | ({"mds"} if self.role in ("all", "mds") else set())
        deadline = time.monotonic() + timeout
        while not wanted <= set(self.ports):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mybot did not start its HTTP servers; last lines: {self.lines[-5:]}")
            self._ports_known.wait(0.1)
            self._ports_known.clear()
        self.wait_ready(deadline - time.monotonic())
        return self

    def wait_ready(self, timeout: float) -> None:
        """Until /v1/health says ok (the start-up reconciliation passed, the feed ticks)."""

        def healthy() -> bool:
            try:
                return requests.get(self.control + "/v1/health", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        eventually(healthy, max(timeout, 1.0), interval=0.1, message="mybot healthy")

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            self.lines.append(entry)
            if entry.get("event") == "HTTP_STARTED":
                self.ports[str(entry.get("server"))] = int(entry["port"])
                self._ports_known.set()

    def stop(self, timeout: float = 10.0) -> int | None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc is not None else None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)

    def __enter__(self) -> LiveDaemon:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- conveniences ---------------------------------------------------------------------------------------

    @staticmethod
    def lot(symbol: str) -> int:
        """Units per lot of `symbol` in the shipped instrument snapshot (what the daemon validates against)."""
        lot = snapshot_book().lot_size(symbol)
        assert lot is not None, symbol
        return lot

    def post(self, path: str, body: dict[str, Any] | None = None, *, port: str = "control") -> requests.Response:
        base = self.control if port == "control" else self.mds
        return requests.post(base + path, json=body, headers=self.auth, timeout=10)

    def get(self, path: str, *, port: str = "control", **params: Any) -> requests.Response:
        base = self.control if port == "control" else self.mds
        return requests.get(base + path, params=params, timeout=10)
