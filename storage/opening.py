"""`open_storage(url)`: the Storage for a URL (the backends import the interfaces; this picks a backend)."""

from __future__ import annotations

import os
from pathlib import Path

from storage.repositories import Storage

__all__ = ["open_storage", "sqlite_path"]


def open_storage(url: str, connect_timeout: float = 3.0, password: str = "") -> Storage:
    """The Storage for `url`: `sqlite:///relative/or/absolute/path` or `postgresql://...`.

    Never touches the database: when it is down, the object is still made and every call raises
    StorageUnavailable until it is back.
    """
    if url.startswith("sqlite:///"):
        from storage.sqlite import SqliteStorage

        return SqliteStorage(sqlite_path(url), busy_timeout=connect_timeout)
    if url.startswith(("postgresql://", "postgres://")):
        from storage.postgres import PostgresStorage

        return PostgresStorage(url, connect_timeout=connect_timeout, password=password)
    raise ValueError(f"unsupported storage URL scheme: {url.split(':', 1)[0]!r} "
                     "(expected sqlite:/// or postgresql://)")


def sqlite_path(url: str) -> Path:
    """`sqlite:///var/x.db` -> ./var/x.db (relative to the working directory); `sqlite:////abs/x.db` -> /abs/x.db."""
    raw = url[len("sqlite:///"):].split("?", 1)[0]
    if not raw:
        raise ValueError("sqlite URL has no path")
    path = Path(raw)
    return path if path.is_absolute() else Path(os.getcwd()) / path
