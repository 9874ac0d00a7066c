"""Issue 9, requirement 4: the strategy re-raises an exit for a live trade it has already asked to exit.

Three layers: the pure follow-up (core.signals.ExitFollowUp, no threads, time passed in); the strategy
actor with a recording sink, a virtual clock and a position the trader keeps live; and the trade actor
(TraderHarness: real PostgreSQL, the paper broker), which must not place a second exit order for a
repeated exit while its own exit is working or being retried.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from actors.clock import VirtualClock
from actors.signals.messages import CandlesClosed, Drain, PositionClosed, RecordingSink
from actors.signals.strategy import FollowUpExits, StrategyActor, StrategyOptions
from actors.trading.messages import GetTrade
from config.settings import ConfigError, load_settings, settings_summary
from core.market import Candle
from core.orders import Leg
from core.signals import EXIT_SCORE, ExitFollowUp, ExitSignalRaised
from core.trade import TradeState
from supervision.scheduler import Scheduler
from supervision.store import Store
from supervision.supervisor import ChildSpec, SupervisorHandle, start_root, stop_root
from telemetry.logs import configure_logging
from tests.support.series import replay_settings, trend_ticks
from tests.support.trading import TraderHarness, eventually, exit_signal, trader_settings

MINUTE = 60
SCORE: Any = None  # the follow-up never looks at the score: it repeats the signal it was given


def exit_of(pos_id: str, at: float = 0.0, reason: str = EXIT_SCORE) -> ExitSignalRaised:
    return ExitSignalRaised(pos_id, reason, SCORE, at, "NIFTY", 0.7)


# -- the pure follow-up ------------------------------------------------------------------------------------
def test_an_exit_is_asked_again_once_reraise_seconds_have_passed_since_the_last_ask() -> None:
    follow = ExitFollowUp(30.0).ask(exit_of("P1", at=100.0), now=1000.0)
    assert follow.due({"P1"}, 1029.9) == (follow, [])
    follow, [again] = follow.due({"P1"}, 1030.0)
    assert again.signal == exit_of("P1", at=1030.0)  # the same exit, decided at the time it is asked again
    assert (again.attempt, again.waited, again.since_last) == (2, 30.0, 30.0)
    follow, none = follow.due({"P1"}, 1059.0)  # the wait starts over from the last ask
    assert none == []
    follow, [third] = follow.due({"P1"}, 1075.0)
    assert (third.attempt, third.waited, third.since_last) == (3, 75.0, 45.0)
    assert [(a.signal.pos_id, a.attempts, a.first_at, a.last_at) for a in follow.pending()] == [
        ("P1", 3, 1000.0, 1075.0)]


def test_the_follow_up_is_a_value_every_change_returns_a_new_one() -> None:
    empty = ExitFollowUp(30.0)
    one = empty.ask(exit_of("P1"), now=0.0)
    later, _ = one.due({"P1"}, 60.0)
    assert len(empty) == 0 and one.pending()[0].attempts == 1 and later.pending()[0].attempts == 2
    assert one.close("P1") is not one and len(one) == 1 and one.close("NOPE") is one


def test_a_position_that_is_no_longer_live_is_not_asked_again() -> None:
    follow = ExitFollowUp(30.0).ask(exit_of("P1"), now=0.0).ask(exit_of("P2"), now=0.0)
    follow, repeats = follow.due({"P2", "OTHER"}, 30.0)
    assert [r.signal.pos_id for r in repeats] == ["P2"]
    assert "P1" not in follow and "P2" in follow and len(follow) == 1
    assert len(follow.retain(set())) == 0


def test_position_closed_ends_the_follow_up_at_once() -> None:
    follow = ExitFollowUp(30.0).ask(exit_of("P1"), now=0.0).close("P1")
    assert "P1" not in follow
    assert follow.due({"P1"}, 100.0)[1] == []  # still listed live (the view lags): nothing was asked


def test_a_new_decision_to_exit_counts_as_an_attempt_and_restarts_the_wait() -> None:
    follow = ExitFollowUp(30.0).ask(exit_of("P1"), now=0.0)
    follow = follow.ask(exit_of("P1", reason="SQUARE_OFF"), now=20.0)  # square-off decided it again
    assert follow.due({"P1"}, 49.0)[1] == []
    [again] = follow.due({"P1"}, 50.0)[1]
    assert (again.signal.reason, again.attempt, again.waited, again.since_last) == ("SQUARE_OFF", 3, 50.0, 30.0)


def test_several_positions_are_followed_each_on_its_own_time_in_pos_id_order() -> None:
    follow = ExitFollowUp(10.0).ask(exit_of("P2"), now=0.0).ask(exit_of("P1"), now=0.0).ask(exit_of("P3"), now=5.0)
    follow, repeats = follow.due({"P1", "P2", "P3"}, 10.0)
    assert [(r.signal.pos_id, r.attempt) for r in repeats] == [("P1", 2), ("P2", 2)]
    assert [(r.signal.pos_id, r.attempt) for r in follow.due({"P1", "P2", "P3"}, 15.0)[1]] == [("P3", 2)]


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan")])
def test_the_reraise_interval_must_be_positive(seconds: float) -> None:
    with pytest.raises(ValueError, match="reraise_seconds"):
        ExitFollowUp(seconds)


def test_the_setting_defaults_to_30_seconds_is_validated_and_shown_by_config_check() -> None:
    assert load_settings(env={}).strategy.exit_reraise_seconds == 30.0
    assert load_settings(env={"MYBOT_STRATEGY_EXIT_RERAISE_SECONDS": "12.5"}).strategy.exit_reraise_seconds == 12.5
    for bad in (0, 0.5, 7200, "soon"):
        with pytest.raises(ConfigError, match="strategy.exit_reraise_seconds"):
            load_settings(env={}, overrides={"strategy": {"exit_reraise_seconds": bad}})
    assert settings_summary(load_settings(env={}))["strategy"]["exit_reraise_seconds"] == 30.0


# -- the strategy actor --------------------------------------------------------------------------------------
def _candles() -> list[Candle]:
    bars: dict[int, list[float]] = {}
    for ts, _, price in trend_ticks():
        bar = bars.setdefault(int(ts // MINUTE) * MINUTE, [price, price, price, price])
        bar[1], bar[2], bar[3] = max(bar[1], price), min(bar[2], price), price
    return [Candle("NIFTY", ts, *bar) for ts, bar in sorted(bars.items())]


TREND = _candles()  # a warm-up, an up-trend, its reversal: a long position is told to exit in the reversal


class LiveTrades:
    """The trader's live trades as the strategy sees them (a PositionsView); the test closes them."""

    def __init__(self, **positions: tuple[str, int]) -> None:
        self.positions = dict(positions)

    def __call__(self) -> dict[str, tuple[str, int]]:
        return dict(self.positions)


def start_strategy(clock: VirtualClock, positions: LiveTrades | None) -> tuple[Any, RecordingSink]:
    # No entries (the score never reaches 1.0): the only signals are the held position's exits.
    settings = replay_settings(strategy={"entry_max_candle_age_seconds": 0, "mds_entry_score_min": 1.0,
                                         "exit_reraise_seconds": 30.0})
    sink = RecordingSink()
    ref = StrategyActor.start(None, settings, sink, None, clock, Scheduler.shared(), StrategyOptions(), None,
                              positions)
    return ref, sink


def exits(sink: RecordingSink) -> list[ExitSignalRaised]:
    return [s for s in sink.signals if isinstance(s, ExitSignalRaised)]


def repeated_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == "EXIT_SIGNAL_REPEATED"]


def test_the_strategy_asks_again_to_exit_a_position_that_stays_live_until_it_is_gone(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)  # the EXIT_SIGNAL_REPEATED lines (configure_logging would unhook caplog)
    clock = VirtualClock(1_000.0)
    live = LiveTrades(**{"NIFTY-LIVE-1": ("NIFTY", 1)})  # held long; the trader never closes it (yet)
    ref, sink = start_strategy(clock, live)
    ref.tell(CandlesClosed("NIFTY", tuple(TREND)))
    ref.ask(Drain())
    [first] = exits(sink)
    assert (first.pos_id, first.reason) == ("NIFTY-LIVE-1", EXIT_SCORE)
    assert ref.ask(Drain())["exits_asked"] == ["NIFTY-LIVE-1"]

    clock.advance(1_029.0)
    ref.tell(FollowUpExits())  # what the timer tells: 29 s after the ask, not yet
    ref.ask(Drain())
    assert len(exits(sink)) == 1

    clock.advance(1_030.0)  # the actor's own timer finds it due
    assert sink.wait_for(lambda signals: len(exits(sink)) == 2, timeout=5.0), sink.signals
    second = exits(sink)[1]
    assert (second.pos_id, second.reason, second.at) == ("NIFTY-LIVE-1", EXIT_SCORE, 1_030.0)
    [line] = repeated_lines(caplog)
    assert (line.pos_id, line.attempt, line.waited_seconds, line.reason) == (  # type: ignore[attr-defined]
        "NIFTY-LIVE-1", 2, 30.0, EXIT_SCORE)
    clock.advance(1_061.0)
    assert sink.wait_for(lambda signals: len(exits(sink)) == 3, timeout=5.0), sink.signals
    assert [r.attempt for r in repeated_lines(caplog)] == [2, 3]  # type: ignore[attr-defined]

    del live.positions["NIFTY-LIVE-1"]  # the trade closed
    clock.advance(1_200.0)
    ref.tell(FollowUpExits())
    status = ref.ask(Drain())
    assert len(exits(sink)) == 3 and status["exits_asked"] == [] and status["exits_repeated"] == 2


def test_position_closed_from_the_trader_stops_the_repeats() -> None:
    configure_logging("WARNING")
    clock = VirtualClock(1_000.0)
    live = LiveTrades(**{"NIFTY-LIVE-2": ("NIFTY", 1)})
    ref, sink = start_strategy(clock, live)
    ref.tell(CandlesClosed("NIFTY", tuple(TREND)))
    ref.ask(Drain())
    assert [e.pos_id for e in exits(sink)] == ["NIFTY-LIVE-2"]
    ref.tell(PositionClosed("NIFTY-LIVE-2", "closed"))
    clock.advance(1_100.0)
    ref.tell(FollowUpExits())
    assert ref.ask(Drain())["exits_asked"] == [] and len(exits(sink)) == 1


def test_a_restarted_strategy_keeps_asking_and_does_not_take_the_position_back_into_its_book() -> None:
    """The follow-up lives in the assembly's crash-only store: the strategy's restart (its supervisor's, an
    operator's, a crash) does not forget an exit asked, nor adopts the exiting position as an open one."""
    configure_logging("WARNING")
    clock = VirtualClock(1_000.0)
    live = LiveTrades(**{"NIFTY-LIVE-3": ("NIFTY", 1)})
    settings = replay_settings(strategy={"entry_max_candle_age_seconds": 0, "mds_entry_score_min": 1.0,
                                         "exit_reraise_seconds": 30.0})
    sink, options = RecordingSink(), StrategyOptions()
    store = Store("strategy.exits", ExitFollowUp(settings.strategy.exit_reraise_seconds))
    tree = start_root(SupervisorHandle("signals", [ChildSpec("strategy", lambda link: StrategyActor.start(
        link, settings, sink, None, clock, Scheduler.shared(), options, None, live, None, exits=store))]),
        lambda reason: None)
    try:
        strategy = tree.handle("strategy")
        strategy.tell(CandlesClosed("NIFTY", tuple(TREND)))
        strategy.ask(Drain())
        assert [e.pos_id for e in exits(sink)] == ["NIFTY-LIVE-3"]
        assert tree.restart("strategy")["restarts"] == 1
        status = strategy.ask(Drain())  # the new instance
        assert status["exits_asked"] == ["NIFTY-LIVE-3"] and status["open_positions"] == {}
        clock.advance(1_030.0)
        assert sink.wait_for(lambda signals: len(exits(sink)) == 2, timeout=5.0), sink.signals
        assert exits(sink)[1].pos_id == "NIFTY-LIVE-3" and store.get().pending()[0].attempts == 2
    finally:
        assert stop_root(tree, timeout=5)


def test_without_a_view_of_the_live_trades_an_exit_is_not_repeated_blindly() -> None:
    """Replays keep the signal-only book: nothing says whether a trade is still live (their decision gate
    waits for each exit to close instead), so nothing is re-raised."""
    configure_logging("WARNING")
    clock = VirtualClock(1_000.0)
    settings = replay_settings(strategy={"entry_max_candle_age_seconds": 0, "exit_reraise_seconds": 30.0})
    sink = RecordingSink()
    ref = StrategyActor.start(None, settings, sink, None, clock, Scheduler.shared(),
                              StrategyOptions(sync_positions=False), None, None)
    ref.tell(CandlesClosed("NIFTY", tuple(TREND)))
    ref.ask(Drain())
    asked = [e.pos_id for e in exits(sink)]
    assert asked  # the trend's long entry and its exit in the reversal
    clock.advance(5_000.0)
    ref.tell(FollowUpExits())
    status = ref.ask(Drain())
    assert [e.pos_id for e in exits(sink)] == asked and status["exits_repeated"] == 0


# -- the trade actor: a repeated exit is harmless -------------------------------------------------------------
def test_a_repeated_strategy_exit_never_places_a_second_exit_order_while_one_works_or_is_retried(
        pg_url: str) -> None:
    settings = trader_settings(pg_url, execution={"order_timeout_seconds": 0.3, "exit_retry_initial_seconds": 3.0,
                                                  "exit_retry_max_seconds": 3.0})
    with TraderHarness(settings) as h:
        h.enter("AGAIN-1")
        h.wait_state("AGAIN-1", "POSITION_OPEN")
        trade = h.trader.trades.find_child("AGAIN-1")
        h.broker.hold_fills(True)  # the exit order will sit unfilled
        h.exit("AGAIN-1")
        h.wait_state("AGAIN-1", "EXIT_ORDER_PLACED")
        for _ in range(3):  # the strategy asks again while the exit order works
            assert h.trader.desk.tell(exit_signal("AGAIN-1"))
        assert trade.ask(GetTrade(), timeout=5).state is TradeState.EXIT_ORDER_PLACED  # handled after them
        assert h.events("AGAIN-1").count("ExitRequested") == 1

        # The exit order times out and is cancelled; the next one waits 3 s (EXIT_RETRY_SCHEDULED).
        eventually(lambda: h.events("AGAIN-1")[-1] == "OrderCancelled" and h.state("AGAIN-1") == "POSITION_OPEN",
                   message=lambda: f"the unfilled exit cancelled: {h.events('AGAIN-1')}")
        cancelled_at = time.monotonic()
        for _ in range(3):  # ... and asks again while the trade waits to retry
            assert h.trader.desk.tell(exit_signal("AGAIN-1"))
        assert trade.ask(GetTrade(), timeout=5).state is TradeState.POSITION_OPEN
        assert time.monotonic() - cancelled_at < 3.0, "the repeats must land inside the retry pause"
        assert h.events("AGAIN-1").count("ExitRequested") == 1
        assert [r.leg for r in h.broker.places] == [Leg.ENTRY, Leg.EXIT]

        h.broker.hold_fills(False)
        h.wait_state("AGAIN-1", "CLOSED", timeout=10.0)  # the retry's own exit order fills
        assert [r.leg for r in h.broker.places] == [Leg.ENTRY, Leg.EXIT, Leg.EXIT]  # one per attempt, no more
        assert h.events("AGAIN-1").count("ExitRequested") == 2
