"""Falcon app factories. They take the runtime's handles (no globals); resources hold collaborators only.

- `create_mds_app(market_data, runtime)`: the seed's MDS paths on port 8002.
- `create_control_app(runtime, trading)`: status, health, actor restarts, the incident review
  (httpapi/review.py) and (role trader/all) the trading control surface on port 8000.
"""

from __future__ import annotations

from typing import Any

import falcon

from httpapi.common import create_base_app, require_token
from httpapi.guard import read_guard
from httpapi.mds import add_mds_routes
from httpapi.status import ActorRestartResource, HealthResource, StatusResource

__all__ = ["create_control_app", "create_mds_app"]


def create_mds_app(market_data: Any, runtime: Any, resolve: Any = None) -> falcon.App:
    """`resolve`: a user's symbol -> the system's (the instrument master's `canonical`), for /v1/quote."""
    app = create_base_app()
    app.add_route("/v1/health", HealthResource(runtime))
    add_mds_routes(app, market_data, resolve)
    return app


def create_control_app(runtime: Any, trading: Any = None) -> falcon.App:
    app = create_base_app()
    app.add_middleware(read_guard(runtime))  # reads need the token too on a non-loopback control port
    auth = require_token(runtime.control_token)
    app.add_route("/v1/health", HealthResource(runtime))
    app.add_route("/v1/status", StatusResource(runtime))
    app.add_route("/v1/actors/{actor_id}/restart", ActorRestartResource(runtime, auth))
    if trading is not None:
        from httpapi.control import add_trading_routes

        add_trading_routes(app, trading, auth)
    from httpapi.review import add_review_routes

    add_review_routes(app, runtime, trading)
    return app
