"""Tick series and settings for replays and strategy tests: a warm-up, a clean trend, its reversal."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from config.settings import Settings, load_settings
from core.market import IST

__all__ = ["DOWN", "SESSION_OPEN", "UP", "WARM", "replay_settings", "trend_ticks", "write_ticks"]

SESSION_OPEN = datetime(2026, 11, 20, 9, 15, tzinfo=IST).timestamp()
WARM, UP, DOWN = 45, 35, 35  # minutes of each phase


def trend_ticks(symbol: str = "NIFTY", start: float = SESSION_OPEN, warm: int = WARM, up: int = UP,
                down: int = DOWN, step: float = 8.0, base: float = 24_000.0,
                ticks_per_minute: int = 6) -> list[tuple[float, str, float]]:
    """A flat, wiggling warm-up, then a clean up-trend of `step` points a minute, then its reversal."""
    ticks = []
    price = base
    for minute in range(warm + up + down):
        drift = 0.0 if minute < warm else (step if minute < warm + up else -step)
        for k in range(ticks_per_minute):
            wiggle = 1.5 if (minute * ticks_per_minute + k) % 2 else -1.5
            ticks.append((start + minute * 60 + k * 60 / ticks_per_minute, symbol, round(price + wiggle, 2)))
            price += drift / ticks_per_minute
    return ticks


def write_ticks(path: Path, ticks: list[tuple[float, str, float]]) -> Path:
    lines = ["ts,symbol,ltp,volume"]
    for ts, symbol, price in ticks:
        stamp = datetime.fromtimestamp(ts, IST).isoformat(timespec="milliseconds")
        lines.append(f"{stamp},{symbol},{price},0")
    path.write_text("\n".join(lines) + "\n")
    return path


def replay_settings(**sections: Any) -> Settings:
    """One-minute scoring (warm after ~35 candles) so a two-hour series says something."""
    overrides: dict[str, Any] = {
        "feed": {"symbols": ["NIFTY"]},
        "strategy": {"timeframes": [60], "timeframe_weights": {"60": 1.0}},
        "log": {"level": "WARNING"},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_settings(env={}, overrides=overrides)


