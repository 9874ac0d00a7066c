"""Dhan market-feed v2 binary packets, little-endian, exactly as dhan-api.md §3 lays them out.

Header '<BHBI': response code, message length (the whole packet, header included), segment, security id.
One packet per websocket frame: the SDK decodes only the first packet of a frame.
"""

from __future__ import annotations

import struct
import time

__all__ = [
    "IST_OFFSET",
    "disconnect_packet",
    "full_packet",
    "ist_epoch_now",
    "market_status_packet",
    "oi_packet",
    "prev_close_packet",
    "quote_packet",
    "ticker_packet",
]

IST_OFFSET = 19_800  # LTT is IST wall-clock seconds written as an epoch: UTC epoch + 5h30


def ist_epoch_now() -> int:
    return int(time.time()) + IST_OFFSET


def _header(code: int, length: int, segment: int, security_id: int) -> bytes:
    return struct.pack("<BHBI", code, length, segment, security_id)


def ticker_packet(segment: int, security_id: int, ltp: float, ltt: int) -> bytes:
    packet = _header(2, 16, segment, security_id) + struct.pack("<fI", ltp, ltt)
    assert len(packet) == 16
    return packet


def prev_close_packet(segment: int, security_id: int, prev_close: float, prev_oi: int = 0) -> bytes:
    return _header(6, 16, segment, security_id) + struct.pack("<fI", prev_close, prev_oi)


def quote_packet(segment: int, security_id: int, ltp: float, ltt: int, volume: int, *, ltq: int = 75,
                 atp: float | None = None, total_sell_qty: int = 0, total_buy_qty: int = 0,
                 open_: float | None = None, close: float | None = None, high: float | None = None,
                 low: float | None = None) -> bytes:
    packet = _header(4, 50, segment, security_id) + struct.pack(
        "<fHIfIIIffff", ltp, ltq, ltt, ltp if atp is None else atp, volume, total_sell_qty, total_buy_qty,
        ltp if open_ is None else open_, ltp if close is None else close,
        ltp if high is None else high, ltp if low is None else low)
    assert len(packet) == 50
    return packet


def oi_packet(segment: int, security_id: int, oi: int) -> bytes:
    return _header(5, 12, segment, security_id) + struct.pack("<I", oi)


def full_packet(segment: int, security_id: int, ltp: float, ltt: int, volume: int, *, ltq: int = 75,
                oi: int = 0, depth: list[tuple[int, int, int, int, float, float]] | None = None) -> bytes:
    levels = depth or [(100 * (i + 1), 100 * (i + 1), i + 1, i + 1, ltp - 0.05 * (i + 1), ltp + 0.05 * (i + 1))
                       for i in range(5)]
    body = struct.pack("<fHIfIIIIIIffff", ltp, ltq, ltt, ltp, volume, 0, 0, oi, oi, oi, ltp, ltp, ltp, ltp)
    packed_depth = b"".join(struct.pack("<IIHHff", *level) for level in levels[:5])
    packet = _header(8, 162, segment, security_id) + body + packed_depth
    assert len(packet) == 162
    return packet


def market_status_packet() -> bytes:
    return _header(7, 8, 0, 0)


def disconnect_packet(reason: int) -> bytes:
    """Code 50: 805 too many connections, 806 no data plan, 807 token expired, 808 client id, 809 auth."""
    return _header(50, 10, 0, 0) + struct.pack("<H", reason)
