"""`mybot run` as a real process for end-to-end tests.

- `LiveDaemon`: the embedded default (sim feed, paper broker, SQLite in a temp dir, both HTTP servers on
  free ports, an all-day risk session, a known control token), driven over HTTP:

      with LiveDaemon(tmp_path) as daemon:
          requests.get(daemon.control + "/v1/health")

- `Daemon`: any configuration (a TOML text and environment), its JSON log lines awaited by event
  (`event("RECONCILE_STARTUP")`), stopped with SIGTERM or killed with SIGKILL (`kill()`).

Both drain stdout with a thread, so the pipe never fills; ports come from the HTTP_STARTED lines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from actors.instruments import snapshot_book
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
MYBOT = [sys.executable, "-m", "daemon.cli"]
TOKEN = "dashboard-test-token-0123456789"

__all__ = ["MYBOT", "ROOT", "TOKEN", "Daemon", "LiveDaemon", "control_call"]


def control_call(port: int, method: str, path: str, body: dict[str, Any] | None = None, *,
                 token: str) -> tuple[int, dict[str, Any]]:
    """One call to a control API on this machine: (status, JSON body), an HTTP error's included."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


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


class Daemon:
    """A `mybot run` process whose JSON log lines are collected by a reader thread (so the pipe never fills)."""

    def __init__(self, tmp_path: Path, name: str, config: str, role: str, **env: str) -> None:
        workdir = tmp_path / name
        workdir.mkdir(exist_ok=True)  # a restart of the same daemon keeps its folder
        (workdir / "mybot.toml").write_text(config)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MYBOT_")
                    and k not in ("MARKET_DATA_PROVIDER", "MDS_BASE_URL")}
        full_env.update({"MYBOT_HTTP_MDS_PORT": "0", "MYBOT_HTTP_CONTROL_PORT": "0",
                         "MYBOT_STORAGE_URL": f"sqlite:///{workdir / 'db.sqlite'}",
                         "MYBOT_SECRETS_DIR": str(workdir / "secrets"), "PYTHONPATH": str(ROOT), **env})
        self.proc = subprocess.Popen([*MYBOT, "run", "--role", role, "--config", str(workdir / "mybot.toml")],
                                     cwd=workdir, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                entry = json.loads(raw)
            except ValueError:
                entry = {"event": "RAW", "message": raw.rstrip()}
            with self.cond:
                self.lines.append(entry)
                self.cond.notify_all()
        with self.cond:
            self.lines.append({"event": "EOF"})
            self.cond.notify_all()

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [line for line in self.lines if match(line)]
            return bool(found) or any(line["event"] == "EOF" for line in self.lines)

        with self.cond:
            self.cond.wait_for(seen, timeout)
            if not found:
                tail = [f"{line.get('event')}: {str(line.get('message'))[:160]}" for line in self.lines[-12:]]
                raise AssertionError("not seen in the log; last lines:\n" + "\n".join(tail))
            return found[0]

    def event(self, name: str, timeout: float = 20.0, **fields: Any) -> dict[str, Any]:
        return self.wait_for(lambda line: line.get("event") == name
                             and all(line.get(k) == v for k, v in fields.items()), timeout)

    def port(self, server: str) -> int:
        return int(self.event("HTTP_STARTED", server=server)["port"])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=5)

    def tail(self, lines: int = 15) -> str:
        """The last log lines, for a failure message."""
        with self.cond:
            last = self.lines[-lines:]
        return "\n" + "\n".join(f"{line.get('event')}: {str(line.get('message'))[:200]}" for line in last)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
             token: str) -> tuple[int, dict[str, Any]]:
        """One control API call with the bearer token: (status, JSON body), an HTTP error included."""
        return control_call(self.port("control"), method, path, body, token=token)

    def kill(self) -> int:
        """kill -9: no shutdown, nothing released."""
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=10)
