"""Falcon app factories. They take the runtime's handles (no globals); resources hold collaborators only.

- `create_mds_app(market_data, runtime)`: the seed's MDS paths on port 8002.
- `create_control_app(runtime, trading, market)`: status, health, actor restarts, the incident review
  (httpapi/review.py), (role trader/all) the trading control surface, and the operator's dashboard on port
  8000.

Both serve `GET /metrics` (Prometheus) and `GET /v1/openapi.json` (their own routes' OpenAPI 3 contract).
"""

from __future__ import annotations

from typing import Any

import falcon

from httpapi.common import create_base_app, require_token
from httpapi.guard import read_guard
from httpapi.mds import add_mds_routes
from httpapi.metrics import MetricsResource, runtime_collector
from httpapi.openapi import OpenApiResource
from httpapi.status import ActorRestartResource, HealthResource, StatusResource

__all__ = ["create_control_app", "create_mds_app"]

DEFAULT_TIMEFRAMES = (60, 300, 900)


def create_mds_app(market_data: Any, runtime: Any, resolve: Any = None) -> falcon.App:
    """`resolve`: a user's symbol -> the system's (the instrument master's `canonical`), for /v1/quote."""
    app = create_base_app("mds")
    app.add_route("/v1/health", HealthResource(runtime))
    add_mds_routes(app, market_data, resolve)
    _add_contract(app, runtime, "mybot MDS API", "The market data service (the seed's Server A), port 8002.")
    return app


def create_control_app(runtime: Any, trading: Any = None, market: Any = None) -> falcon.App:
    """`market`: the read model the dashboard's charts use (role all / mds: the MDS cache; role trader with an
    MDS: an httpapi.dashboard.MdsProxyView); None = no market view."""
    from httpapi.dashboard import SecurityHeaders, add_dashboard_routes, add_market_routes
    from httpapi.views import MarketClock, market_clock

    app = create_base_app("control", middleware=[SecurityHeaders()])
    app.add_middleware(read_guard(runtime))  # reads need the token too on a non-loopback control port
    auth = require_token(runtime.control_token)
    app.add_route("/v1/health", HealthResource(runtime))
    app.add_route("/v1/status", StatusResource(runtime))
    app.add_route("/v1/actors/{actor_id}/restart", ActorRestartResource(runtime, auth))
    views = ["overview"]
    if trading is not None:
        from httpapi.control import add_trading_routes

        add_trading_routes(app, trading, auth)
        views += ["positions", "trades", "risk"]
    from httpapi.review import add_review_routes

    add_review_routes(app, runtime, trading)
    settings = getattr(runtime, "settings", None)
    if market is not None and settings is not None:
        timeframes = tuple(t for t in settings.strategy.timeframes if t % 60 == 0) or DEFAULT_TIMEFRAMES
        add_market_routes(app, market, tuple(settings.feed.symbols), tuple(settings.option_chain.underlyings),
                          timeframes)
        views.append("market")
    calendar = getattr(runtime, "calendar", None)  # the process's one market calendar
    clock = MarketClock(calendar) if calendar is not None else \
        market_clock(settings.calendar.holidays_file) if settings is not None else None
    add_dashboard_routes(app, runtime, clock, views)
    _add_contract(app, runtime, "mybot control API", "Status, health, the incident review, the trading controls "
                  "and the operator's dashboard (the seed's Server B), port 8000. Mutations need "
                  "`Authorization: Bearer <token>`.")
    return app


def _add_contract(app: falcon.App, runtime: Any, title: str, description: str) -> None:
    app.add_route("/metrics", MetricsResource(runtime_collector(runtime)))
    app.add_route("/v1/openapi.json", OpenApiResource(app, title, description))
