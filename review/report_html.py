"""The review as ONE self-contained HTML file: no script, no CDN, no request of any kind.

Charts are inline SVG drawn here (the incident timeline, the equity curve, a price chart per traded
symbol with entries and exits marked); tooltips are SVG <title>s. Every text that comes from a log is
escaped (logs are untrusted input), and a Content-Security-Policy forbids any load anyway.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from core.market import IST
from review.model import Incident, PriceSeries, Review, TradeStory
from review.report_text import clock, duration_text, step_detail

__all__ = ["render_html"]

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#1d2330;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dde6;padding-bottom:4px}
.muted{color:#667085}.glance{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px}
.card{border:1px solid #d8dde6;border-radius:6px;padding:8px 10px}.card b{display:block;font-size:18px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:3px 6px;border-bottom:1px solid #eef0f4;vertical-align:top}
th{background:#f6f7f9}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td.mono{white-space:nowrap}.pos{color:#0a7d38}.neg{color:#b42318}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
details{border:1px solid #d8dde6;border-radius:6px;margin:8px 0;padding:4px 10px}summary{cursor:pointer;font-weight:600}
svg{display:block;max-width:100%;height:auto;margin:6px 0}svg text{font:11px system-ui,sans-serif;fill:#475467}
.warn{color:#b54708}
"""
_KIND_COLORS = {
    "PROCESS_RESTART": "#7a271a", "ESCALATION": "#b42318", "ACTOR_CRASH": "#d92d20", "ACTOR_RESTART": "#f79009",
    "DEAD_LETTER": "#6941c6", "FEED_STALE": "#dc6803", "DATABASE_OUTAGE": "#1570ef", "REDIS_OUTAGE": "#0e9384",
    "MDS_OUTAGE": "#155eef", "ORDER_TIMEOUT": "#c11574", "ORDER_SLIPPAGE": "#dd2590", "KILL_SWITCH": "#101828",
    "LOSS_LIMIT_HALT": "#344054", "RECONCILE_INCIDENT": "#4e5ba6", "RECONCILE_HOLD": "#4e5ba6",
    "TOKEN_EXPIRY": "#ca8504", "EXIT_RETRIES": "#e04f16",
}
_TICKS = (1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _money(value: float | None) -> str:
    if value is None:
        return "<span class='muted'>?</span>"
    css = "pos" if value > 0 else ("neg" if value < 0 else "")
    return f"<span class='{css}'>{value:+,.2f}</span>"


class _Scale:
    def __init__(self, lo: float, hi: float, px0: float, px1: float) -> None:
        if hi <= lo:
            hi = lo + 1.0
        self.lo, self.hi, self.px0, self.px1 = lo, hi, px0, px1

    def __call__(self, value: float) -> float:
        return self.px0 + (value - self.lo) / (self.hi - self.lo) * (self.px1 - self.px0)


def _time_ticks(lo: float, hi: float, count: int = 8) -> Iterable[float]:
    span = max(hi - lo, 1.0)
    step = next((s for s in _TICKS if span / s <= count), _TICKS[-1])
    offset = 19_800  # ticks on IST round times
    first = ((lo + offset) // step + 1) * step - offset
    tick = first
    while tick <= hi:
        yield tick
        tick += step


def _tick_label(epoch: float, span: float) -> str:
    moment = datetime.fromtimestamp(epoch, IST)
    return moment.strftime("%H:%M:%S" if span < 600 else "%H:%M")


def _time_axis(x: _Scale, y: float, top: float) -> list[str]:
    parts = []
    span = x.hi - x.lo
    for tick in _time_ticks(x.lo, x.hi):
        px = x(tick)
        parts.append(f"<line x1='{px:.1f}' y1='{top:.1f}' x2='{px:.1f}' y2='{y:.1f}' stroke='#eef0f4'/>")
        parts.append(f"<text x='{px:.1f}' y='{y + 14:.1f}' text-anchor='middle'>{e(_tick_label(tick, span))}</text>")
    return parts


def _timeline(review: Review) -> str:
    incidents = [i for i in review.incidents]
    lo, hi = review.summary.first, review.summary.last
    times = [t for i in incidents for t in (i.start, i.end) if t is not None]
    if lo is None or hi is None:
        if not times:
            return "<p class='muted'>No lines in the window.</p>"
        lo, hi = min(times), max(times)
    lo, hi = min([lo] + times), max([hi] + times)
    streams = list(dict.fromkeys(p.stream for p in review.processes))
    kinds = streams + sorted({i.kind for i in incidents})
    width, left, right, row = 1100, 150, 20, 22
    height = 30 + row * len(kinds) + 24
    x = _Scale(lo, hi, left, width - right)
    parts = [f"<svg id='incident-timeline' class='chart' role='img' aria-label='incident timeline' "
             f"viewBox='0 0 {width} {height}' width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>"]
    parts += _time_axis(x, height - 24, 20)
    for index, kind in enumerate(kinds):
        y = 24 + index * row
        parts.append(f"<text x='{left - 8}' y='{y + 14}' text-anchor='end'>{e(kind)}</text>")
        parts.append(f"<line x1='{left}' y1='{y + row - 2}' x2='{width - right}' y2='{y + row - 2}' stroke='#f2f4f7'/>")
    for process in review.processes:  # a row per log: its processes' lives, the gaps between them
        if process.first is None:
            continue
        x0, x1 = x(process.first), x(process.last or process.first)
        y = 24 + kinds.index(process.stream) * row + 4
        parts.append(f"<rect class='process' x='{x0:.1f}' y='{y}' width='{max(x1 - x0, 2):.1f}' height='12' rx='2' "
                     f"fill='#98a2b3'><title>{e(process.id)} pid {e(process.pid)} {e(clock(process.first))} - "
                     f"{e(clock(process.last))} {e(process.end)}</title></rect>")
    for incident in incidents:
        y = 24 + kinds.index(incident.kind) * row + 4
        color = _KIND_COLORS.get(incident.kind, "#475467")
        start = incident.start if incident.start is not None else lo
        end = incident.end if incident.end is not None else (start if incident.instant else hi)
        tip = (f"{incident.id} {incident.kind} {clock(incident.start)} - "
               f"{clock(incident.end) if incident.end else 'ongoing'} ({duration_text(incident.duration)}) "
               f"{incident.actor or incident.symbol} {' '.join(incident.pos_ids[:4])}: {incident.detail}")
        if incident.instant:
            cx = x(start)
            parts.append(f"<path class='incident' d='M{cx:.1f} {y}l6 6-6 6-6-6z' fill='{color}'>"
                         f"<title>{e(tip)}</title></path>")
        else:
            x0, x1 = x(start), x(end)
            parts.append(f"<rect class='incident' x='{x0:.1f}' y='{y}' width='{max(x1 - x0, 3):.1f}' height='12' "
                         f"rx='2' fill='{color}' fill-opacity='{0.55 if incident.ongoing else 0.9}'>"
                         f"<title>{e(tip)}</title></rect>")
    parts.append("</svg>")
    return "".join(parts)


def _line_chart(chart_id: str, label: str, points: list[tuple[float, float]], marks: list[dict[str, Any]],
                step: bool = False, zero: bool = False) -> str:
    if not points and not marks:
        return f"<p class='muted'>No data for {e(label)}.</p>"
    width, height, left, right, top, bottom = 1100, 260, 70, 20, 14, 26
    times = [p[0] for p in points] + [m["at"] for m in marks]
    values = [p[1] for p in points] + [m["price"] for m in marks] + ([0.0] if zero else [])
    lo_v, hi_v = min(values), max(values)
    pad = (hi_v - lo_v) * 0.08 or max(abs(hi_v) * 0.01, 1.0)
    x = _Scale(min(times), max(times), left, width - right)
    y = _Scale(lo_v - pad, hi_v + pad, height - bottom, top)
    parts = [f"<svg id='{e(chart_id)}' class='chart' role='img' aria-label='{e(label)}' viewBox='0 0 {width} {height}' "
             f"width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>"]
    parts += _time_axis(x, height - bottom, top)
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        value = (lo_v - pad) + fraction * ((hi_v + pad) - (lo_v - pad))
        py = y(value)
        parts.append(f"<line x1='{left}' y1='{py:.1f}' x2='{width - right}' y2='{py:.1f}' stroke='#f2f4f7'/>")
        parts.append(f"<text x='{left - 6}' y='{py + 4:.1f}' text-anchor='end'>{value:,.2f}</text>")
    if zero:
        parts.append(f"<line x1='{left}' y1='{y(0.0):.1f}' x2='{width - right}' y2='{y(0.0):.1f}' stroke='#98a2b3' "
                     "stroke-dasharray='4 3'/>")
    if points:
        coords: list[str] = []
        previous_y = None
        for at, value in points:
            px, py = x(at), y(value)
            if step and previous_y is not None:
                coords.append(f"{px:.1f},{previous_y:.1f}")
            coords.append(f"{px:.1f},{py:.1f}")
            previous_y = py
        parts.append(f"<polyline class='series' fill='none' stroke='#1570ef' stroke-width='1.6' "
                     f"points='{' '.join(coords)}'/>")
    for mark in marks:
        px, py = x(mark["at"]), y(mark["price"])
        entry = mark.get("kind") == "entry"
        shape = (f"M{px:.1f} {py - 7:.1f}l6 10h-12z" if entry else f"M{px:.1f} {py + 7:.1f}l6 -10h-12z")
        parts.append(f"<path class='mark {'entry' if entry else 'exit'}' d='{shape}' "
                     f"fill='{'#0a7d38' if entry else '#b42318'}'><title>{e(mark.get('kind'))} {e(mark.get('pos_id'))} "
                     f"{e(clock(mark['at']))} @ {mark['price']:,.2f}</title></path>")
    parts.append("</svg>")
    return "".join(parts)


def _equity(review: Review) -> str:
    points = [(at, total) for at, _, _, total in review.equity]
    if points and review.summary.first is not None:
        points = [(review.summary.first, 0.0)] + points
    marks = [{"at": at, "price": total, "kind": "entry" if pnl >= 0 else "exit", "pos_id": f"{pos_id} {pnl:+,.2f}"}
             for at, pos_id, pnl, total in review.equity]
    if not points:
        return "<p class='muted'>No closed trades.</p>"
    return _line_chart("equity-curve", "equity curve (net P&L)", points, marks, step=True, zero=True)


def _price(series: PriceSeries, index: int) -> str:
    source = "closed 1-minute candles" if series.source == "candles" else "order and fill prices (no candles logged)"
    return (f"<h3>{e(series.symbol)} <span class='muted'>({e(source)}; ▲ entry fill, ▼ exit fill)</span></h3>"
            + _line_chart(f"price-{index}", f"price of {series.symbol}", [(p.at, p.price) for p in series.points],
                          series.marks))


def _incident_rows(incidents: list[Incident]) -> str:
    rows = []
    for i in incidents:
        what = "; ".join(x for x in (f"actor {i.actor}" if i.actor else "", f"symbol {i.symbol}" if i.symbol else "",
                                     ("pos_id " + ", ".join(i.pos_ids)) if i.pos_ids else "", i.process) if x)
        rows.append(f"<tr id='{e(i.id)}'><td class='mono'>{e(i.id)}</td><td>{e(i.kind)}</td>"
                    f"<td class='mono'>{e(clock(i.start))}</td><td class='mono'>"
                    f"{e(clock(i.end)) if i.end is not None else ('' if i.instant else 'ongoing')}</td>"
                    f"<td class='num'>{e('' if i.instant else duration_text(i.duration))}</td><td>{e(what)}</td>"
                    f"<td>{e(i.detail)}{(' <span class=muted>x' + str(i.count) + '</span>') if i.count > 1 else ''}"
                    f"{(' <span class=muted>[' + e(i.ended_by) + ']</span>') if i.ended_by else ''}</td></tr>")
    return ("<table><tr><th>id</th><th>kind</th><th>start</th><th>end</th><th>duration</th><th>affected</th>"
            "<th>detail</th></tr>" + "".join(rows) + "</table>") if rows else "<p class='muted'>None.</p>"


def _story(story: TradeStory) -> str:
    title = (f"{e(story.pos_id)} · {e(story.symbol)} {e(story.instrument)} {e(story.side)} {e(story.qty)} · "
             f"{e(story.state)} · {_money(story.net_pnl)}" + (f" · exit: {e(story.exit_reason)}" if story.exit_reason
                                                              else ""))
    latencies = " · ".join(f"{e(name.replace('_', ' '))}: {e(duration_text(value))}"
                           for name, value in story.latencies.items() if value is not None)
    notes = []
    if latencies:
        notes.append(f"<p>Latency: {latencies}</p>")
    if len(story.processes) > 1:
        notes.append(f"<p>Across processes: {e(' → '.join(story.processes))}</p>")
    if story.missing:
        notes.append(f"<p class='warn'>Missing from the log: {e(', '.join(story.missing))}</p>")
    if story.incidents:
        notes.append("<p>Incidents: " + ", ".join(f"<a href='#{e(i)}'>{e(i)}</a>" for i in story.incidents) + "</p>")
    rows = "".join(
        f"<tr><td class='mono'>{e(clock(s.at))}</td><td class='num mono'>"
        f"{'' if s.since_previous is None else e(f'+{s.since_previous:.3f}s')}</td><td>{e(s.event)}</td>"
        f"<td>{e(s.source)}</td><td>{e(step_detail(s))}</td></tr>" for s in story.steps)
    return (f"<details class='trade' open><summary>{title}</summary>{''.join(notes)}<table><tr><th>time</th>"
            f"<th>since previous</th><th>event</th><th>source</th><th>what</th></tr>{rows}</table></details>")


def render_html(review: Review) -> str:
    s = review.summary
    window = review.window
    scope = f"day {window.day} (IST)" if window.day else "all lines"
    if window.narrower_than_day():
        bounds = window.as_json()
        scope += f", {bounds['since'] or '…'} to {bounds['until'] or '…'}"
    rate = "n/a" if s.win_rate is None else f"{s.win_rate * 100:.1f}%"
    denied = ", ".join(f"{k} {v}" for k, v in s.entries_denied.items()) or "none"
    kinds = ", ".join(f"{k} {v}" for k, v in s.incidents.items()) or "none"
    cards = [("trades closed", str(s.closed)), ("open", str(s.open)), ("denied", str(s.denied)),
             ("net P&L" + ("" if s.charges_logged else " (gross)"), f"{s.net_pnl:+,.2f}"), ("win rate", rate),
             ("max drawdown", f"{s.max_drawdown:,.2f}"), ("incidents", str(len(review.incidents))),
             ("garbled lines", str(review.garbled))]
    glance = "".join(f"<div class='card'><span class='muted'>{e(k)}</span><b>{e(v)}</b></div>" for k, v in cards)
    processes = "".join(
        f"<tr><td class='mono'>{e(p.id)}</td><td>{e(p.pid)}</td><td>{e(p.role)}</td><td class='mono'>{e(clock(p.first))}"
        f"</td><td class='mono'>{e(clock(p.last))}</td><td>{e(p.end)}</td></tr>" for p in review.processes)
    garbled = "".join(
        f"<tr><td class='mono'>{e(f['path'])}</td><td class='num'>{e(f['garbled'])}</td><td>"
        + "<br>".join(f"line {e(x['line'])}: {e(x['reason'])}: <code>{e(x['text'])}</code>" for x in f["samples"])
        + "</td></tr>" for f in review.files if f["garbled"])
    body = [
        f"<h1>mybot review</h1><p class='muted'>{e(scope)} · {review.lines:,} lines from {len(review.files)} file(s)"
        f" · {review.garbled:,} garbled</p>",
        "<h2>The day at a glance</h2>", f"<div class='glance'>{glance}</div>",
        f"<p>Entries denied: {e(denied)}" + (f"; {s.entries_skipped} signals skipped by the strategy"
                                             if s.entries_skipped else "") + f".<br>Incidents: {e(kinds)}.</p>",
        "<h2>Incident timeline</h2>", _timeline(review),
        f"<h2>Incidents ({len(review.incidents)})</h2>", _incident_rows(review.incidents),
        "<h2>Equity curve</h2>", _equity(review),
        "<h2>Prices of traded symbols</h2>",
        "".join(_price(series, index) for index, series in enumerate(review.prices))
        or "<p class='muted'>No traded symbol.</p>",
        f"<h2>Trades ({len(review.trades)})</h2>",
        "".join(_story(story) for story in review.trades) or "<p class='muted'>None.</p>",
        "<h2>Processes</h2><table><tr><th>process</th><th>pid</th><th>role</th><th>first line</th><th>last line</th>"
        f"<th>end</th></tr>{processes}</table>",
        f"<h2>Garbled lines ({review.garbled})</h2>",
        (f"<table><tr><th>file</th><th>count</th><th>samples</th></tr>{garbled}</table>" if garbled
         else "<p class='muted'>None.</p>"),
    ]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<link rel='icon' href='data:,'>"
            f"<title>mybot review {e(window.day or '')}</title><style>{_STYLE}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
