"""The shipped deploy/supervisord.conf and deploy/mybot.toml, templated into a temp dir and run by a real
supervisord (the `supervisor` package) running the real `mybot` command.

Templating moves the production paths into `root` (/opt/mybot -> root/app, /etc/mybot -> root/etc,
/var/log/mybot -> root/log, /run/mybot -> root/run), drops `user=mybot` (the test is not root), runs the
test's own venv's `mybot`, and applies the test's settings over the example TOML (ports, storage, the
fake Dhan). Everything else is the file as shipped. `supervisord.conf` lands in `root`, so a
`supervisorctl` run with `cwd=root` finds it the way an operator's finds /etc/supervisord.conf.

    with Supervisord(tmp_path, settings={...}, secrets={...}) as sup:
        sup.wait_healthy()
        sup.ctl("pid", "mybot")
        requests.post(f"{sup.url}/v1/trades", ...)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import requests

__all__ = ["ROOT", "Supervisord", "free_port", "toml_dumps"]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_dumps(document: dict[str, Any]) -> str:
    """Enough TOML for a settings file: top-level keys, then one table per section."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in document.items() if not isinstance(value, dict)]
    for section, values in document.items():
        if isinstance(values, dict):
            lines.append(f"\n[{section}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


class Supervisord:
    def __init__(self, root: Path, *, settings: dict[str, dict[str, Any]], secrets: dict[str, str],
                 role: str = "trader", program: dict[str, str] | None = None) -> None:
        self.root = root
        self.app, self.etc, self.logs, self.run = (root / "app", root / "etc", root / "log", root / "run")
        self.secrets = self.etc / "secrets"
        for folder in (self.app, self.secrets, self.logs, self.run):
            folder.mkdir(parents=True, exist_ok=True)
        for name, value in secrets.items():
            (self.secrets / name).write_text(value)
        self.control_port = free_port()
        self.url = f"http://127.0.0.1:{self.control_port}"
        self.log_file = self.logs / "mybot.log"
        self.config_file = self.etc / "mybot.toml"
        document = tomllib.loads((ROOT / "deploy" / "mybot.toml").read_text())
        document["secrets_dir"] = str(self.secrets)
        document.setdefault("http", {}).update(control_port=self.control_port, mds_port=free_port())
        document.setdefault("log", {})["file"] = str(self.log_file)
        for section, values in settings.items():
            document.setdefault(section, {}).update(values)
        self.config_file.write_text(toml_dumps(document))
        text = (ROOT / "deploy" / "supervisord.conf").read_text()
        text = (text.replace("/opt/mybot/.venv/bin/mybot", str(BIN / "mybot"))
                .replace("/opt/mybot", str(self.app)).replace("/etc/mybot", str(self.etc))
                .replace("/var/log/mybot", str(self.logs)).replace("/run/mybot", str(self.run))
                .replace("--role all", f"--role {role}"))
        lines = [line for line in text.splitlines() if not line.startswith("user=")]
        for key, value in (program or {}).items():  # a [program:mybot] value the test needs changed
            lines = [f"{key}={value}" if line.split("=", 1)[0] == key else line for line in lines]
        self.conf = root / "supervisord.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """What supervisord (and so mybot) runs with: this environment minus any MYBOT_ setting."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MYBOT_")}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        return env

    def start(self) -> Supervisord:
        self.process = subprocess.Popen([str(BIN / "supervisord"), "-n", "-c", str(self.conf)], cwd=self.root,
                                        env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not (self.run / "supervisor.sock").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"supervisord did not start: {self._tail(self.logs / 'supervisord.log')}")
            time.sleep(0.05)  # waiting for another process's socket file: nothing to wait on but the file
        return self

    def ctl(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "supervisorctl"), "-c", str(self.conf), *args], cwd=self.root,
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def pid(self) -> int:
        answer = self.ctl("pid", "mybot")
        return int(answer.stdout.strip() or 0) if answer.stdout.strip().isdigit() else 0

    def wait_healthy(self, timeout: float = 60.0, other_than: int = 0) -> int:
        """Until mybot (a pid other than `other_than`) answers 200 on /v1/health; its pid."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            pid = self.pid()
            if pid and pid != other_than:
                try:
                    answer = requests.get(f"{self.url}/v1/health", timeout=2)
                    if answer.status_code == 200:
                        return pid
                    last = answer.text
                except requests.RequestException as exc:
                    last = str(exc)
            time.sleep(0.2)  # polling another process over HTTP: there is no event to wait on
        raise AssertionError(f"mybot not healthy within {timeout} s: {last}\n{self.problems()}")

    def problems(self) -> str:
        """What to look at when a test fails: supervisord's log, mybot's stdout, warnings in its log."""
        log_lines = []
        for path in sorted(self.logs.glob("mybot.log*")):
            if path.suffix != ".gz":
                log_lines += [line for line in path.read_text(errors="replace").splitlines()
                              if '"level":"INFO"' not in line]
        return (f"supervisord.log:\n{self._tail(self.logs / 'supervisord.log')}\n"
                f"mybot.stdout.log:\n{self._tail(self.logs / 'mybot.stdout.log')}\n"
                "mybot.log (warnings and errors):\n" + "\n".join(log_lines[-30:]))

    @staticmethod
    def _tail(path: Path, lines: int = 30) -> str:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(none)"

    def close(self) -> None:
        if self.process is None:
            return
        last = self.pid() if self.process.poll() is None else 0
        if self.process.poll() is None:
            self.ctl("shutdown", timeout=30)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if last and _is_mybot(last):  # a mybot supervisord could not stop: never leave it running
            os.kill(last, 9)

    def __enter__(self) -> Supervisord:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _is_mybot(pid: int) -> bool:
    try:
        return b"mybot" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
