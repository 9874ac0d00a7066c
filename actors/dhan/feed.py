"""DhanFeedSource: Dhan's live market feed v2 through the SDK's `dhanhq.MarketFeed`, as a TickSource.

The SDK's own `run()` loop reconnects every second forever, cannot be stopped without
`close_connection()` (which blocks forever on a dead socket, SDK issue #139) and prints to stdout. So the
source owns the loop instead: one daemon thread running the SDK's event loop (`MarketFeed.loop`, made
by its constructor on that thread), awaiting the SDK's `connect()` -- which opens
`MarketFeed.market_feed_wss?version=2&token=..&clientId=..&authType=2` and sends the subscriptions -- and
then reading frames from `MarketFeed.ws`. Frames are decoded here rather than with the SDK's
`process_data`, which turns the LTT into an 'HH:MM:SS' string and so loses the date.

  * LTT is IST wall-clock seconds written as an epoch: Tick.ts = LTT - 19800 (true epoch).
  * quote/full packets carry the cumulative day volume: Tick.volume is its increase since the previous
    packet of the symbol (0 for the first one seen, and for ticker packets).
  * Ticks decoded in one pass of the event loop are handed to on_ticks as one batch.
  * A drop reconnects with exponential backoff and jitter, re-subscribing everything (SDK `connect()`).
  * A disconnect packet (code 50) is logged as FEED_DISCONNECTED with its reason. 807-810 (token /
    client id / auth) and 806 (no data plan) end the source through on_error with a permanent error;
    805 (too many connections) waits the longest backoff, then reconnects.
  * With a `TokenState` (the runtime's), the token comes from it before every connect; when it changes
    (renewed) the socket reconnects at once with the new one (FEED_TOKEN_SWAPPED); and 807-809 on the
    current token does not end the source: it reports the token refused and waits for a new one
    (FEED_WAITING_FOR_TOKEN), then reconnects -- an expired token must not crash-loop the feed.
  * While the websocket is down, the REST LTP of all symbols is polled in one request at most once per
    feed.rest_fallback_interval_seconds (>= 1 s, Dhan's quote limit); those ticks carry the local time.
  * Contracts are added and removed while the socket runs (`watch` / `unwatch`, the ContractSubscriber
    protocol): the SDK's `subscribe_symbols` / `unsubscribe_symbols` send them on the running connection
    in messages of at most 100 instruments, and remember them for every reconnect. A connection carries
    at most 5000 instruments (Dhan's limit): past it a contract is refused and logged.
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
import threading
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from dhanhq import DhanContext, MarketFeed

from actors.brokers.base import PermanentBrokerError, TemporaryBrokerError
from actors.clock import Clock
from actors.dhan.client import DhanClient
from actors.dhan.errors import DhanAuthError, RateLimited
from actors.dhan.ids import InstrumentMap, UnknownSymbol
from actors.dhan.threads import cancel_until_stopped
from actors.dhan.token import TokenState
from actors.sources.base import SourceCallbacks, SourceStatus
from config.settings import Settings
from core.market import Tick
from telemetry.logs import get_logger, redact

__all__ = ["DhanFeedSource", "FeedPacket", "TickAssembler", "decode_packet", "disconnect_reason"]

_log = get_logger("actors.dhan.feed")

IST_OFFSET = 19_800
MODES = {"ticker": 15, "quote": 17, "full": 21}
DISCONNECT_REASONS = {805: "too many connections", 806: "data APIs not subscribed", 807: "access token expired",
                      808: "invalid client id", 809: "authentication failed", 810: "invalid client id"}
AUTH_REASONS = frozenset({807, 808, 809, 810})
FATAL_REASONS = AUTH_REASONS | {806}
CLOSE_TIMEOUT = 1.0
MAX_INSTRUMENTS_PER_CONNECTION = 5000  # Dhan's limit; the SDK batches 100 per subscribe message


class FeedPacket(NamedTuple):
    code: int
    segment: int
    security_id: int
    ltp: float
    ltt: int  # IST seconds as an epoch
    volume: int | None  # cumulative day volume (quote/full), None for ticker


def decode_packet(frame: bytes) -> FeedPacket | None:
    """A price packet (ticker 2, quote 4, full 8) or None for everything else (prev close, OI, status)."""
    if len(frame) < 8:
        return None
    code = frame[0]
    if code == 2 and len(frame) >= 16:
        _, _, segment, sid, ltp, ltt = struct.unpack_from("<BHBIfI", frame)
        return FeedPacket(code, segment, sid, ltp, ltt, None)
    if (code == 4 and len(frame) >= 50) or (code == 8 and len(frame) >= 162):
        _, _, segment, sid, ltp, _ltq, ltt, _atp, volume = struct.unpack_from("<BHBIfHIfI", frame)
        return FeedPacket(code, segment, sid, ltp, ltt, volume)
    return None


async def _close_quietly(ws: object) -> None:
    """Close one socket (not `sdk.ws`, which a reconnect may already have replaced); abort if it hangs."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await ws.close()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a dead socket: dropped below
        transport = getattr(ws, "transport", None)
        if transport is not None:
            transport.abort()


def disconnect_reason(frame: bytes) -> int | None:
    if len(frame) >= 10 and frame[0] == 50:
        return int(struct.unpack_from("<H", frame, 8)[0])
    return None


class TickAssembler:
    """Packets -> Ticks for our symbols. Pure: the local time comes in only for packets without an LTT."""

    def __init__(self, symbols_by_instrument: Mapping[tuple[int, int], str]) -> None:
        self._symbols = dict(symbols_by_instrument)
        self._day_volume: dict[str, int] = {}

    def add(self, instrument: tuple[int, int], symbol: str) -> None:
        self._symbols[instrument] = symbol  # one dict store: safe beside the feed thread's reads

    def remove(self, instrument: tuple[int, int]) -> None:
        symbol = self._symbols.pop(instrument, None)
        if symbol is not None:
            self._day_volume.pop(symbol, None)

    def tick(self, packet: FeedPacket, now: float) -> Tick | None:
        symbol = self._symbols.get((packet.segment, packet.security_id))
        if symbol is None:
            return None
        ts = float(packet.ltt - IST_OFFSET) if packet.ltt > 0 else now
        volume = 0
        if packet.volume is not None:
            previous = self._day_volume.get(symbol)
            if previous is not None:
                # A smaller total means a new day's count (the feed restarted it): all of it is new.
                volume = packet.volume - previous if packet.volume >= previous else packet.volume
            self._day_volume[symbol] = packet.volume
        return Tick(symbol, ts, round(packet.ltp, 2), volume)


class DhanFeedSource:
    """TickSource over Dhan's websocket; `client` (for the REST fallback) is built from settings if None."""

    name = "dhan"

    def __init__(self, settings: Settings, symbols: Sequence[str], clock: Clock, *,
                 client: DhanClient | None = None, instruments: InstrumentMap | None = None,
                 rng: random.Random | None = None, token: TokenState | None = None) -> None:
        self._settings = settings
        self._feed_settings = settings.feed
        self._symbols = tuple(dict.fromkeys(symbols))
        self._clock = clock
        self._instruments = instruments or InstrumentMap(settings.dhan.security_ids)
        by_instrument = {}
        for symbol in self._symbols:
            inst = self._instruments.instrument(symbol)
            by_instrument[(inst.feed_segment, inst.security_id)] = symbol
        self._by_instrument = dict(by_instrument)
        self._configured = frozenset(by_instrument)
        self._assembler = TickAssembler(by_instrument)
        self._mode = MODES[settings.feed.dhan_mode]
        self._subscriptions = [(seg, str(sid), self._mode) for seg, sid in by_instrument]
        self._contracts: dict[str, tuple[int, int]] = {}  # watched symbol -> (feed segment, security id)
        self._client = client
        self._own_client = False
        self._rng = rng or random.Random()
        redact(settings.dhan.access_token.reveal())

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._sdk: MarketFeed | None = None
        self._callbacks: SourceCallbacks | None = None
        self._pending: list[Tick] = []
        self._flush_scheduled = False
        self._next_poll = 0.0
        self._fallback_enabled = settings.feed.rest_fallback

        self._connected = False
        self._ticks = 0
        self._reconnects = 0
        self._connections = 0
        self._fallback_active = False
        self._fallback_polls = 0
        self._last_disconnect = ""

        self._token = token
        self._unsubscribe_token: object = None
        self._connected_token = ""  # the token the current (or last) connection logged in with
        self._token_changed: asyncio.Event | None = None  # made on the feed thread's loop
        self._reconnect_now = False

    # -- TickSource -------------------------------------------------------------------------------------

    def start(self, callbacks: SourceCallbacks) -> None:
        if self._thread is not None:
            return
        self._callbacks = callbacks
        if self._token is not None:
            self._unsubscribe_token = self._token.subscribe(self._token_swapped)
        self._thread = threading.Thread(target=self._run, name="dhan-feed", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        if callable(self._unsubscribe_token):
            self._unsubscribe_token()
        with self._lock:
            self._stop.set()
        if not cancel_until_stopped(self._thread, self._loop_and_task, timeout):
            _log.event("FEED_STOP_TIMEOUT", "dhan feed thread did not end in time", level=30, timeout=timeout)
        if self._own_client and self._client is not None:
            self._client.close()

    # -- contracts while running (ContractSubscriber) -----------------------------------------------------

    def watch(self, symbols: Sequence[str], prices: Mapping[str, float]) -> list[str]:
        accepted: list[str] = []
        added: list[tuple[int, str, int]] = []
        with self._lock:
            for symbol in symbols:
                try:
                    inst = self._instruments.instrument(symbol)
                except UnknownSymbol as exc:
                    _log.event("FEED_SUBSCRIBE_REFUSED", f"{symbol}: {exc}", level=30, symbol=symbol)
                    continue
                key = (inst.feed_segment, inst.security_id)
                if key in self._by_instrument:
                    accepted.append(symbol)
                    continue
                if len(self._by_instrument) >= MAX_INSTRUMENTS_PER_CONNECTION:
                    _log.event("FEED_SUBSCRIBE_REFUSED", f"{symbol}: the connection already carries "
                               f"{len(self._by_instrument)} instruments (Dhan's limit)", level=40, symbol=symbol)
                    continue
                self._by_instrument[key] = symbol
                self._contracts[symbol] = key
                self._assembler.add(key, symbol)
                added.append((key[0], str(key[1]), self._mode))
                accepted.append(symbol)
            sdk = self._sdk
            if sdk is None:  # not running yet: the first connect subscribes them
                self._subscriptions.extend(added)
        if added and sdk is not None:
            # Sends on the running socket (from here, onto the SDK's loop) in batches of 100, and keeps
            # them in sdk.instruments so that connect() subscribes them again after a drop.
            sdk.subscribe_symbols(added)
        return accepted

    def unwatch(self, symbols: Sequence[str]) -> None:
        removed: list[tuple[int, str, int]] = []
        with self._lock:
            for symbol in symbols:
                key = self._contracts.pop(symbol, None)
                if key is None or key in self._configured:
                    continue
                self._by_instrument.pop(key, None)
                self._assembler.remove(key)
                entry = (key[0], str(key[1]), self._mode)
                removed.append(entry)
                if entry in self._subscriptions:
                    self._subscriptions.remove(entry)
            sdk = self._sdk
        if removed and sdk is not None:
            sdk.unsubscribe_symbols(removed)

    def _loop_and_task(self) -> tuple[asyncio.AbstractEventLoop | None, asyncio.Task[None] | None]:
        with self._lock:
            return self._loop, self._task

    def status(self) -> SourceStatus:
        with self._lock:
            return SourceStatus(
                name=self.name, connected=self._connected, finished=False, ticks=self._ticks,
                reconnects=self._reconnects,
                detail={"fallback_polling": self._fallback_active, "fallback_polls": self._fallback_polls,
                        "last_disconnect": self._last_disconnect, "symbols": len(self._symbols),
                        "contracts": sorted(self._contracts),
                        "mode": self._feed_settings.dhan_mode})

    # -- the feed thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        loop: asyncio.AbstractEventLoop | None = None
        assert self._callbacks is not None
        try:
            if self._fallback_enabled and self._client is None:
                self._client = DhanClient(self._settings, clock=self._clock, instruments=self._instruments,
                                          token=self._token)
                self._own_client = True
            # A class attribute: connect() reads MarketFeed.market_feed_wss, never the instance's.
            MarketFeed.market_feed_wss = self._settings.dhan.feed_url
            token = self._token.current() if self._token is not None else self._settings.dhan.access_token.reveal()
            context = self._client.context if self._client is not None else DhanContext(
                self._settings.dhan.client_id.reveal(), token)
            with self._lock:  # a watch() racing this start lands in the list or goes through the SDK
                self._sdk = MarketFeed(context, list(self._subscriptions), version="v2")
            loop = self._sdk.loop  # made and set as this thread's loop by the SDK's constructor
            with self._lock:
                self._loop = loop
                self._task = loop.create_task(self._main())
                if self._stop.is_set():
                    self._task.cancel()
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the feed actor
            _log.event("FEED_FAILED", f"dhan feed stopped: {exc}", level=40, error=type(exc).__name__,
                       code=getattr(exc, "code", ""))
            self._callbacks.on_error(exc)
        finally:
            with self._lock:
                self._connected = False
            if loop is not None:
                try:
                    loop.run_until_complete(loop.shutdown_default_executor())
                finally:
                    loop.close()

    async def _main(self) -> None:
        settings = self._feed_settings
        backoff = settings.reconnect_initial_seconds
        self._token_changed = asyncio.Event()
        try:
            while not self._stop.is_set():
                reason: int | None = None
                error = ""
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel (our stop)
                    # that lands just as the inner coroutine finishes.
                    async with asyncio.timeout(self._settings.dhan.request_timeout_seconds):
                        await self._connect()
                    if self._stop.is_set():
                        return
                    self._on_connected()
                    backoff = settings.reconnect_initial_seconds
                    reason = await self._receive()
                except (asyncio.CancelledError, PermanentBrokerError):
                    raise
                except Exception as exc:  # noqa: BLE001 - any socket failure means: reconnect
                    error = f"{type(exc).__name__}: {exc}"
                await self._close_socket(polite=False)  # e.g. a connect that timed out mid-subscribe
                delay = backoff * (0.5 + self._rng.random() / 2)
                backoff = min(backoff * 2, settings.reconnect_max_seconds)
                if reason == 805:
                    delay = settings.reconnect_max_seconds
                if self._reconnect_now:  # a new token: dial again at once
                    self._reconnect_now, delay = False, 0.0
                self._on_disconnected(reason, error, delay)
                if reason in AUTH_REASONS and self._token is not None:
                    await self._await_new_token(reason)
                    backoff = settings.reconnect_initial_seconds
                    continue
                if reason in FATAL_REASONS:
                    text = f"Dhan feed disconnected: {reason} {DISCONNECT_REASONS.get(reason, '')}"
                    if reason in AUTH_REASONS:
                        raise DhanAuthError(text, str(reason))
                    raise PermanentBrokerError(text, str(reason))
                await self._wait_with_fallback(delay)
        finally:
            await self._close_socket(polite=True)

    async def _connect(self) -> None:
        sdk = self._sdk
        assert sdk is not None
        sdk.ws = None  # connect() only dials when ws is None or CLOSED
        if self._token is not None:
            sdk.access_token = self._token.current()  # connect() puts it in the URL
        self._connected_token = sdk.access_token
        await sdk.connect()  # dials and sends every subscription again

    async def _receive(self) -> int | None:
        """Read frames until the socket ends; the disconnect reason if Dhan sent one (code 50)."""
        sdk = self._sdk
        assert sdk is not None and sdk.ws is not None
        ws = sdk.ws
        while True:
            frame = await ws.recv()
            if isinstance(frame, str):
                continue
            reason = disconnect_reason(frame)
            if reason is not None:
                await self._close_socket(polite=False)
                return reason
            packet = decode_packet(frame)
            if packet is None:
                continue
            tick = self._assembler.tick(packet, self._clock.now())
            if tick is not None:
                self._emit(tick)

    def _emit(self, tick: Tick) -> None:
        self._pending.append(tick)
        if not self._flush_scheduled:
            # Runs after the frames already buffered have been decoded: a burst becomes one batch.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        with self._lock:
            self._ticks += len(batch)
        assert self._callbacks is not None
        try:
            self._callbacks.on_ticks(batch)
        except Exception as exc:  # noqa: BLE001 - a consumer bug must not kill the socket
            _log.event("FEED_SINK_FAILED", f"on_ticks raised: {exc}", level=40, exc_info=exc)

    async def _close_socket(self, *, polite: bool) -> None:
        sdk = self._sdk
        ws = sdk.ws if sdk is not None else None
        if ws is None:
            return
        closed = False
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                if polite:
                    await ws.send(json.dumps({"RequestCode": 12}))
                await ws.close()
            closed = True
        except Exception:  # noqa: BLE001, S110 - a dead socket: dropped below
            pass
        finally:
            if not closed:  # timed out, failed or cancelled: drop the TCP connection without ceremony
                transport = getattr(ws, "transport", None)
                if transport is not None:
                    transport.abort()
            if sdk is not None:
                sdk.ws = None

    # -- the access token ----------------------------------------------------------------------------------

    def _token_swapped(self, token: str) -> None:
        """TokenState listener (the keeper's thread): hand over to the feed thread's loop."""
        with self._lock:
            loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._on_new_token)
            except RuntimeError:  # the loop closed meanwhile: nothing to reconnect
                pass

    def _on_new_token(self) -> None:
        """On the feed thread: wake a wait for a token, and drop a connection made with the old one."""
        if self._token_changed is not None:
            self._token_changed.set()
        sdk = self._sdk
        ws = sdk.ws if sdk is not None else None
        if ws is not None and self._token is not None and self._connected_token != self._token.current():
            _log.event("FEED_TOKEN_SWAPPED", "new access token: reconnecting the market feed with it")
            self._reconnect_now = True
            asyncio.ensure_future(_close_quietly(ws))

    async def _await_new_token(self, reason: int) -> None:
        """807-809 on our token: report it (the keeper renews), then wait until the token changes. A token
        already replaced meanwhile (the renewal revoked the old one) needs no wait."""
        token = self._token
        assert token is not None
        used = self._connected_token
        if used != token.current():
            return
        token.report_rejected(used, f"feed {reason} {DISCONNECT_REASONS.get(reason, '')}".rstrip())
        _log.event("FEED_WAITING_FOR_TOKEN", f"Dhan refused the token ({reason}): the feed waits for a new one",
                   level=40 if token.dead_reason() else 20, reason=reason, renewing=token.renewing)
        self._status("FEED_WAITING_FOR_TOKEN", str(reason))
        changed = self._token_changed
        assert changed is not None
        # Until the token changes -- or, when the refusal came during a renewal that then failed, until the
        # renewal is over and the token is not known dead (then dialing again tells).
        while not self._stop.is_set() and token.current() == used and (token.dead_reason() or token.renewing):
            changed.clear()
            try:
                async with asyncio.timeout(1.0):  # also re-checks the stop flag every second
                    await changed.wait()
            except TimeoutError:
                pass

    # -- state changes -------------------------------------------------------------------------------------

    def _on_connected(self) -> None:
        with self._lock:
            self._connected = True
            self._connections += 1
            if self._connections > 1:
                self._reconnects += 1
            reconnects = self._reconnects
            was_polling, self._fallback_active = self._fallback_active, False
        _log.event("FEED_CONNECTED", "dhan websocket connected and subscribed", source=self.name,
                   symbols=len(self._symbols), reconnects=reconnects)
        self._status("FEED_CONNECTED", f"reconnects={reconnects}")
        if was_polling:
            _log.event("FEED_FALLBACK_STOPPED", "websocket back: REST LTP polling stopped")
            self._status("FEED_FALLBACK_STOPPED", "")

    def _on_disconnected(self, reason: int | None, error: str, retry_in: float) -> None:
        detail = f"{reason} {DISCONNECT_REASONS.get(reason, 'unknown')}" if reason is not None else error
        with self._lock:
            was_connected, self._connected = self._connected, False
            self._last_disconnect = detail
        if was_connected or reason is not None:
            _log.event("FEED_DISCONNECTED", f"dhan websocket down: {detail}", level=30, reason=reason,
                       error=error, retry_in=round(retry_in, 3))
            self._status("FEED_DISCONNECTED", detail)
        else:
            _log.event("FEED_CONNECT_FAILED", f"dhan websocket connect failed: {detail}", level=30,
                       retry_in=round(retry_in, 3))

    def _status(self, event: str, detail: str) -> None:
        if self._callbacks is not None:
            try:
                self._callbacks.on_status(event, detail)
            except Exception as exc:  # noqa: BLE001
                _log.event("FEED_SINK_FAILED", f"on_status raised: {exc}", level=40)

    # -- REST fallback while the socket is down --------------------------------------------------------------

    async def _wait_with_fallback(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        interval = self._feed_settings.rest_fallback_interval_seconds
        while not self._stop.is_set():
            now = loop.time()
            if now >= deadline:
                return
            wake = deadline
            if self._fallback_enabled and self._client is not None:
                if now >= self._next_poll:
                    await self._poll_once()
                    # From the end of the poll: the client's 1 request/s window counts from there too.
                    self._next_poll = loop.time() + interval
                wake = min(deadline, self._next_poll)
            await asyncio.sleep(max(0.0, wake - loop.time()))

    async def _poll_once(self) -> None:
        client = self._client
        assert client is not None
        with self._lock:
            starting, self._fallback_active = not self._fallback_active, True
        if starting:
            _log.event("FEED_FALLBACK_STARTED", "websocket down: polling REST LTP", symbols=len(self._symbols))
            self._status("FEED_FALLBACK_STARTED", "")
        with self._lock:
            symbols = (*self._symbols, *self._contracts)
        try:
            prices: dict[str, float] = await asyncio.to_thread(client.ltp, symbols)
        except RateLimited:
            return
        except TemporaryBrokerError as exc:
            _log.event("FEED_FALLBACK_FAILED", f"REST LTP poll failed: {exc}", level=30, code=exc.code)
            return
        except PermanentBrokerError as exc:
            self._fallback_enabled = False
            _log.event("FEED_FALLBACK_FAILED", f"REST LTP polling disabled: {exc}", level=40, code=exc.code)
            return
        now = self._clock.now()
        with self._lock:
            self._fallback_polls += 1
        for symbol, price in prices.items():
            self._emit(Tick(symbol, now, price, 0))
