"""The placement fence: never a duplicate order, whatever crashes, races or answers ambiguously.

The cross-process tests run real OS processes (multiprocessing, spawn) on one PostgreSQL schema, each a
trader runtime with the real DhanBroker (dhanhq SDK) against the fake Dhan server, which counts orders
per correlationId.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from typing import Any

from actors.brokers.base import AmbiguousSubmitError, PermanentBrokerError, TemporaryBrokerError
from actors.clock import SystemClock
from actors.dhan.broker import DhanBroker
from core.orders import Leg, OrderRequest, correlation_id
from storage.opening import open_storage
from tests.fakedhan import FakeDhan
from tests.support.trading import (
    ScriptedBroker,
    TraderHarness,
    entry_signal,
    eventually,
    trader_settings,
)

# ------------------------------------------------------------------------------------ in one process


def test_executor_crash_between_submit_and_acknowledgement_places_no_duplicate(pg_url: str) -> None:
    with TraderHarness(trader_settings(pg_url)) as h:
        h.broker.crash_after_place = 1  # the order reaches the broker, then the executor dies
        h.enter("FENCE-1")
        h.wait_state("FENCE-1", "POSITION_OPEN")
        assert len(h.broker.orders_for(correlation_id("FENCE-1", Leg.ENTRY))) == 1
        assert len(h.broker.places) == 1  # resolved by correlationId after the restart, never resent
        assert h.events("FENCE-1") == ["SignalAccepted", "EntryRequested", "OrderPlaced", "OrderFilled"]
        assert h.runtime.root.find("executor")[1].status()["restarts"] == 1


def test_ambiguous_submit_that_went_through_is_found_by_correlation_id_not_resent(pg_url: str) -> None:
    with TraderHarness(trader_settings(pg_url)) as h:
        h.broker.fail_next_place(AmbiguousSubmitError("read timed out", "TIMEOUT"), after_accept=True)
        h.enter("FENCE-2")
        h.wait_state("FENCE-2", "POSITION_OPEN")
        assert len(h.broker.places) == 1
        assert len(h.broker.orders_for(correlation_id("FENCE-2", Leg.ENTRY))) == 1


def test_ambiguous_submit_the_broker_never_got_is_looked_up_then_sent_again(pg_url: str) -> None:
    with TraderHarness(trader_settings(pg_url)) as h:
        h.broker.fail_next_place(AmbiguousSubmitError("502 bad gateway", "DH-908"))
        h.enter("FENCE-3")
        h.wait_state("FENCE-3", "POSITION_OPEN")
        assert len(h.broker.places) == 2  # a second submit only after the lookup found nothing
        assert len(h.broker.orders_for(correlation_id("FENCE-3", Leg.ENTRY))) == 1


def test_temporary_refusal_is_retried_on_a_timer_and_a_permanent_one_rejects(pg_url: str) -> None:
    with TraderHarness(trader_settings(pg_url)) as h:
        h.broker.fail_next_place(TemporaryBrokerError("429 too many requests", "DH-904"))
        h.enter("FENCE-4")
        h.wait_state("FENCE-4", "POSITION_OPEN")
        assert len(h.broker.places) == 2
        h.broker.fail_next_place(PermanentBrokerError("insufficient margin", "DH-906"))
        h.enter("FENCE-5")
        h.wait_state("FENCE-5", "REJECTED")
        assert h.events("FENCE-5")[-1] == "OrderRejected"
        eventually(lambda: h.trader.risk.snapshot().open_positions == 1, message="rejected entry frees its slot")


def test_duplicate_pos_id_is_refused_without_a_second_order(pg_url: str) -> None:
    with TraderHarness(trader_settings(pg_url)) as h:
        h.enter("FENCE-6")
        h.wait_state("FENCE-6", "POSITION_OPEN")
        h.enter("FENCE-6")
        eventually(lambda: h.trader.api.status()["entries"]["duplicates"] == 1)
        assert len(h.broker.places) == 1
        assert h.events("FENCE-6").count("SignalAccepted") == 1


class _BrokerDownAtStart(ScriptedBroker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.down = True

    def positions(self) -> Any:
        if self.down:
            raise TemporaryBrokerError("broker unreachable")
        return super().positions()


def test_entries_are_refused_until_the_first_reconciliation_has_passed(pg_url: str) -> None:
    settings = trader_settings(pg_url)
    h = TraderHarness(settings)
    broker = _BrokerDownAtStart(h.quotes, h.clock)
    h = TraderHarness(settings, broker=broker, quotes=h.quotes).start(wait_ready=False)
    try:
        h.enter("FENCE-7")
        eventually(lambda: h.trader.api.status()["entries"]["denied"] == 1)
        assert h.state("FENCE-7") is None and broker.places == []
        assert not h.trader.ready.is_set()
        broker.down = False
        eventually(h.trader.ready.is_set, message="first pass after the broker came back")
        h.enter("FENCE-8")
        h.wait_state("FENCE-8", "POSITION_OPEN")
    finally:
        h.stop()


# ------------------------------------------------------------------------------- across processes


class _DieAfterSubmit(DhanBroker):
    """The process is killed right after the submit reached Dhan, before anything was acknowledged (its
    order-update stream is never heard: the process dies before the update could be journaled)."""

    def subscribe_order_updates(self, listener: Any) -> None:
        pass

    def place(self, request: OrderRequest) -> Any:
        super().place(request)
        os._exit(17)


def _trader_process(pg_url: str, dhan: dict[str, Any], pos_ids: list[str], wait_for: list[str], go: Any,
                    out: Any, die: bool, log_file: str) -> None:
    """One trader process: enter `pos_ids` when `go` is set, report once `wait_for` are all open."""
    from actors.trading.quotes import QuoteBook
    from daemon.runtime import Runtime, Wiring
    from telemetry.logs import configure_logging

    configure_logging("INFO", file=log_file, stream=open(os.devnull, "w"))  # noqa: SIM115

    # The same daemon restarted: one owner name across its lives, so it takes its own trades back at once.
    settings = trader_settings(pg_url, dhan=dhan, broker={"kind": "dhan", "order_burst": 10},
                               execution={"submit_retry_seconds": 0.2}, reconcile={"owner_id": "fence-trader"})
    quotes = QuoteBook()
    quotes.set("SEC_49081", 100.0)
    broker = (_DieAfterSubmit if die else DhanBroker)(settings, SystemClock())
    runtime = Runtime(settings, "trader", wiring=Wiring(subtrees=frozenset({"trading"}), broker=broker,
                                                        quotes=quotes)).start()
    try:
        trader = runtime.trading
        assert trader is not None and trader.ready.wait(15.0)
        out.put(("ready", os.getpid()))
        if pos_ids:
            go.wait(15.0)
            for pos_id in pos_ids:
                trader.desk.tell(entry_signal(pos_id))
        storage = runtime.storage
        eventually(lambda: all((t := storage.trades.get_trade(p)) is not None and t.state == "POSITION_OPEN"
                               for p in wait_for), 20.0)
        status = trader.api.status()
        out.put(("done", {**status["entries"], **status["executor"]}))
    except Exception as exc:
        out.put(("failed", f"pid {os.getpid()}: {type(exc).__name__}: {exc}"))
        raise
    finally:
        runtime.shutdown()


def _problems(paths: list[Any]) -> str:
    """The warnings and errors the trader processes logged (shown when a cross-process test fails)."""
    lines = []
    for path in paths:
        if path.exists():
            lines += [line for line in path.read_text().splitlines() if '"level":"INFO"' not in line]
    return "\n".join(lines[-40:])


def _wait_message(queue: Any, kind: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got, payload = queue.get(timeout=max(0.1, deadline - time.monotonic()))
        if got == "failed":
            raise RuntimeError(payload)
        if got == kind:
            return payload


def test_two_processes_receiving_the_same_entries_place_exactly_one_order_each(pg_url: str, tmp_path: Any) -> None:
    spawn = mp.get_context("spawn")
    logs = [tmp_path / "trader-a.log", tmp_path / "trader-b.log"]
    pos_ids = [f"DUP-{i:02d}" for i in range(20)]
    with FakeDhan() as fake:
        fake.rest.set_order_limit(1000)
        with open_storage(pg_url) as storage:
            storage.migrate()  # once, so the two processes race on the orders only
        go, out = spawn.Event(), spawn.Queue()
        processes = [spawn.Process(target=_trader_process, args=(pg_url, fake.dhan_settings(), pos_ids, pos_ids,
                                                                 go, out, False, str(log))) for log in logs]
        for process in processes:
            process.start()
        try:
            _wait_message(out, "ready")
            _wait_message(out, "ready")
            go.set()  # both executors get all 20 entries at the same moment
            try:
                reports = [_wait_message(out, "done"), _wait_message(out, "done")]
            except Exception as exc:
                raise AssertionError(f"trader processes did not finish: {exc}\n{_problems(logs)}") from exc
        finally:
            for process in processes:
                process.join(20.0)
        assert [p.exitcode for p in processes] == [0, 0]
        for pos_id in pos_ids:
            assert fake.state.count_orders(correlation_id(pos_id, Leg.ENTRY)) == 1, pos_id
        assert len(fake.rest.requests_to("/orders", method="POST")) == 20
        assert all(r["entries"] == 20 for r in reports)  # each executor saw every entry ...
        assert sum(r["submits"] for r in reports) == 20  # ... and each pos_id was sent by one of them
        assert sum(r["duplicates"] for r in reports) == 20
        with open_storage(pg_url) as storage:
            for pos_id in pos_ids:
                assert [e.event for e in storage.trades.events(pos_id)].count("SignalAccepted") == 1


def test_process_killed_after_submit_recovers_from_journal_and_broker_without_a_duplicate(
        pg_url: str, tmp_path: Any) -> None:
    spawn = mp.get_context("spawn")
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    with FakeDhan() as fake:
        go, out = spawn.Event(), spawn.Queue()
        first = spawn.Process(target=_trader_process, args=(pg_url, fake.dhan_settings(), ["KILL-1"], ["KILL-1"],
                                                             go, out, True, str(logs[0])))
        first.start()
        _wait_message(out, "ready")
        go.set()
        first.join(20.0)
        assert first.exitcode == 17  # died between the submit and its acknowledgement
        cid = correlation_id("KILL-1", Leg.ENTRY)
        assert fake.state.count_orders(cid) == 1
        with open_storage(pg_url) as storage:
            assert storage.trades.get_trade("KILL-1").state == "ENTRY_PENDING"
        second = spawn.Process(target=_trader_process, args=(pg_url, fake.dhan_settings(), [], ["KILL-1"], go,
                                                              out, False, str(logs[1])))
        second.start()
        try:
            _wait_message(out, "done")
        except Exception as exc:
            raise AssertionError(f"the restarted process did not recover: {exc}\n{_problems(logs)}") from exc
        second.join(20.0)
        assert second.exitcode == 0
        assert fake.state.count_orders(cid) == 1
        assert len(fake.rest.requests_to("/orders", method="POST")) == 1
        with open_storage(pg_url) as storage:
            assert [e.event for e in storage.trades.events("KILL-1")] == [
                "SignalAccepted", "EntryRequested", "OrderPlaced", "OrderFilled"]
            assert storage.trades.get_trade("KILL-1").state == "POSITION_OPEN"
