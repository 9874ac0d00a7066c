"""Health, status and the operator's actor restart."""

from __future__ import annotations

from typing import Any

import falcon

from supervision.actor import ChildUnavailable
from supervision.supervisor import AskTimeout

__all__ = ["ActorRestartResource", "HealthResource", "StatusResource"]


class HealthResource:
    """200 when every component's check passes; 503 naming what fails. Also says whether the exchange trades
    now (`market`: open / closed, `market_reason`: weekend, holiday: <name>, after hours, ...): outside market
    hours a silent feed is not a failure."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        ok, checks = self.runtime.health()
        resp.status = falcon.HTTP_200 if ok else falcon.HTTP_503
        market = self.runtime.market() if hasattr(self.runtime, "market") else {}
        resp.media = {"status": "ok" if ok else "degraded", "role": self.runtime.role, **market,
                      "failing": [name for name, c in checks.items() if not c["ok"]], "checks": checks}


class StatusResource:
    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.runtime.status()


class ActorRestartResource:
    def __init__(self, runtime: Any, auth: Any) -> None:
        self.runtime = runtime
        self.auth = auth

    def on_post(self, req: falcon.Request, resp: falcon.Response, actor_id: str) -> None:
        self.auth(req)
        try:
            resp.media = {"restarted": actor_id, "status": self.runtime.restart_actor(actor_id)}
        except KeyError:
            raise falcon.HTTPNotFound(title="unknown actor", description=f"no actor with id {actor_id!r}") from None
        except (ChildUnavailable, AskTimeout) as exc:
            raise falcon.HTTPServiceUnavailable(title="supervisor unavailable", description=str(exc)) from exc
