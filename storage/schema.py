"""Versioned SQL migrations shipped as package data: storage/migrations/<backend>/NNNN_name.sql."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files

__all__ = ["Migration", "load_migrations"]

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(backend: str) -> list[Migration]:
    """Every migration of `backend` ("postgresql" | "sqlite"), in version order."""
    folder = files("storage").joinpath("migrations").joinpath(backend)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions for {backend}: {versions}")
    return found
