"""`mybot run` as a real process for tests: its JSON log lines are collected by a reader thread (so the pipe
never fills) and can be awaited; `kill()` is a kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
MYBOT = [sys.executable, "-m", "daemon.cli"]

__all__ = ["MYBOT", "ROOT", "Daemon"]


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

    def kill(self) -> int:
        """kill -9: no shutdown, nothing released."""
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=10)
