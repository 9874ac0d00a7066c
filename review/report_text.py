"""The review as plain text for a terminal: the day at a glance, incidents, trade stories, garbled lines."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.market import IST
from review.model import Incident, Review, Step, TradeStory

__all__ = ["clock", "duration_text", "render_text", "step_detail"]

_STEP_FIELDS = ("leg", "order_id", "qty", "price", "limit_price", "filled_qty", "avg_price", "expected", "actual",
                "pct", "limit_pct", "reason", "code", "exit_reason", "realized_pnl", "charges", "net_pnl", "status",
                "attempt", "phase", "state", "events")


def clock(epoch: float | None, with_date: bool = False) -> str:
    if epoch is None:
        return "…"
    moment = datetime.fromtimestamp(epoch, IST)
    text = moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
    return f"{moment.date().isoformat()} {text}" if with_date else text


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.3f} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {rest:04.1f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes):02d} min"


def _money(value: float | None) -> str:
    return "?" if value is None else f"{value:+,.2f}"


def _short(value: Any, limit: int = 120) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def step_detail(step: Step) -> str:
    """What a step says, in a line: the signal's candle and score, or the message and the useful fields."""
    fields = step.fields
    if step.event == "ENTRY_SIGNAL" and step.source != "journal":
        raw_score = fields.get("score")
        score: dict[str, Any] = raw_score if isinstance(raw_score, dict) else {}
        components = score.get("components") or {}
        parts = ", ".join(f"{k} {v:+.2f}" if isinstance(v, int | float) else f"{k} {v}"
                          for k, v in list(components.items())[:8])
        return (f"{fields.get('symbol', '')} candle {fields.get('candle_time', fields.get('candle_ts', '?'))} "
                f"close {fields.get('close', '?')}: entry_score {score.get('entry_score', '?')}, direction "
                f"{fields.get('direction', '?')} -> {fields.get('side', '')} {fields.get('qty', '')} "
                f"{fields.get('instrument', '')}" + (f" [{parts}]" if parts else ""))
    extras = [f"{name}={_short(fields[name], 60)}" for name in _STEP_FIELDS if name in fields
              and fields[name] not in ("", None)]
    message = _short(step.text, 100)
    return message + (f"  ({', '.join(extras)})" if extras else "")


def _incident_line(incident: Incident, with_date: bool) -> list[str]:
    span = (f"{clock(incident.start, with_date)}" if incident.instant else
            f"{clock(incident.start, with_date)} -> {clock(incident.end, with_date) if incident.end else 'ongoing'}")
    what = []
    if incident.actor:
        what.append(f"actor {incident.actor}")
    if incident.symbol:
        what.append(f"symbol {incident.symbol}")
    if incident.pos_ids:
        what.append("pos_id " + ", ".join(incident.pos_ids[:6]) + (" …" if len(incident.pos_ids) > 6 else ""))
    if incident.process:
        what.append(incident.process)
    duration = "" if incident.instant else f"  {duration_text(incident.duration)}"
    lines = [f"  {incident.id}  {incident.kind:<18} {span}{duration}" + (
        f"  x{incident.count}" if incident.count > 1 else "")]
    if what:
        lines.append(f"      affected: {'; '.join(what)}")
    lines.append(f"      {_short(incident.detail, 140)}" + (f"  [ended by {incident.ended_by}]"
                                                            if incident.ended_by else ""))
    return lines


def _trade_lines(story: TradeStory, with_date: bool) -> list[str]:
    title = f"  {story.pos_id}  {story.symbol}" + (f" ({story.instrument})" if story.instrument else "") + (
        f" {story.side} {story.qty}" if story.side else "") + f"  {story.state or '?'}"
    if story.net_pnl is not None:
        title += f"  P&L {_money(story.net_pnl)}" + ("" if story.charges is not None else " (gross)")
    if story.exit_reason:
        title += f"  exit: {_short(story.exit_reason, 60)}"
    lines = [title]
    lat = story.latencies
    named = [("signal->placed", "signal_to_placed"), ("placed->filled", "placed_to_filled"),
             ("exit requested->filled", "exit_requested_to_filled"), ("signal->closed", "signal_to_closed")]
    shown = [f"{label} {duration_text(lat.get(key))}" for label, key in named if lat.get(key) is not None]
    if shown:
        lines.append("    latency: " + " · ".join(shown))
    if len(story.processes) > 1:
        lines.append("    across processes: " + " -> ".join(story.processes))
    if story.missing:
        lines.append("    missing from the log: " + ", ".join(story.missing))
    if story.incidents:
        lines.append("    incidents: " + ", ".join(story.incidents))
    for step in story.steps:
        gap = "" if step.since_previous is None else f"+{step.since_previous:.3f}s"
        lines.append(f"    {clock(step.at, with_date)} {gap:>10}  {step.event:<20} {step.source:<14} "
                     f"{step_detail(step)}")
    if story.dropped_steps:
        lines.append(f"    … {story.dropped_steps} more lines not kept")
    return lines


def render_text(review: Review) -> str:
    summary = review.summary
    window = review.window
    with_date = not window.day and summary.first is not None and summary.last is not None and (
        datetime.fromtimestamp(summary.first, IST).date() != datetime.fromtimestamp(summary.last, IST).date())
    scope = f"day {window.day} (IST)" if window.day else "all lines"
    if window.narrower_than_day():
        bounds = window.as_json()
        scope += f", {bounds['since'] or '…'} to {bounds['until'] or '…'}"
    out = [f"mybot review: {scope}; {review.lines:,} lines from {len(review.files)} file(s), "
           f"{review.garbled:,} garbled", ""]
    out.append("PROCESSES")
    for process in review.processes:
        pid = f"pid {process.pid}" if process.pid is not None else "pid ?"
        out.append(f"  {process.id}  {pid}, role {process.role or '?'}  {clock(process.first, with_date)} -> "
                   f"{clock(process.last, with_date)}  {process.end}")
    if not review.processes:
        out.append("  (no lines)")
    out += ["", "DAY AT A GLANCE"]
    out.append(f"  trades         {summary.closed} closed, {summary.open} open, {summary.denied} denied, "
               f"{summary.rejected} rejected, {summary.cancelled} cancelled ({summary.signals} in all)")
    charges = (f"charges {summary.charges:,.2f}" if summary.charges_logged else "charges not in the log: gross")
    out.append(f"  net P&L        {_money(summary.net_pnl)} ({charges})")
    rate = "n/a" if summary.win_rate is None else f"{summary.win_rate * 100:.1f}%"
    out.append(f"  win rate       {rate} ({summary.wins} won, {summary.losses} lost)")
    out.append(f"  max drawdown   {summary.max_drawdown:,.2f}")
    denied = ", ".join(f"{k} {v}" for k, v in summary.entries_denied.items()) or "none"
    out.append(f"  entries denied {denied}" + (f"; {summary.entries_skipped} signals skipped by the strategy"
                                               if summary.entries_skipped else ""))
    kinds = ", ".join(f"{k} {v}" for k, v in summary.incidents.items()) or "none"
    out.append(f"  incidents      {kinds}")
    out += ["", f"INCIDENTS ({len(review.incidents)})"]
    for incident in review.incidents:
        out += _incident_line(incident, with_date)
    if not review.incidents:
        out.append("  none")
    out += ["", f"TRADES ({len(review.trades)})"]
    for story in review.trades:
        out += _trade_lines(story, with_date)
        out.append("")
    if not review.trades:
        out += ["  none", ""]
    bad = [f for f in review.files if f["garbled"]]
    out.append(f"GARBLED LINES ({review.garbled})")
    for stats in bad:
        out.append(f"  {stats['path']}: {stats['garbled']} garbled" + (
            f" ({stats['salvaged']} with a whole line after the cut, read)" if stats["salvaged"] else ""))
        for sample in stats["samples"]:
            out.append(f"    line {sample['line']}: {sample['reason']}: {sample['text']!r}")
    if not bad:
        out.append("  none")
    return "\n".join(out) + "\n"
