"""The `alerts` subtree (any role, when a channel is configured): built and wired here.

    alerts (one_for_one)       the root's FIRST child: started first, stopped last, so the line that
      └─ alerter               says the process is giving up (SUPERVISOR_ESCALATED of the root) is still
                               sent while the other subtrees stop

In: every log line, through `AlertLogHandler` on the root logger (installed when the subtree is built,
removed before the tree stops): the trading, market data and supervision code log as they always did and
know nothing of alerts. Out: Telegram (`alerts.telegram_*`) and/or a webhook (`alerts.webhook_*`).
Status: `/v1/status` → `alerts` (counters, channels, queue).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import asdict, dataclass
from typing import Any

from actors.alerts.alerter import Alerter, AlerterOptions
from actors.alerts.channels import Channel, TelegramChannel, WebhookChannel
from actors.alerts.handler import AlertLogHandler
from actors.alerts.queue import AlertCounters, AlertQueue
from actors.clock import Clock
from actors.wiring import Infrastructure, Subtree
from config.settings import Settings
from core.alerts import AlertRules
from supervision.store import Store
from supervision.supervisor import ChildHandle, ChildSpec

__all__ = ["AlertsHandles", "assemble_alerts", "build_channels"]


@dataclass(frozen=True)
class AlertsHandles:
    subtree: Subtree
    alerter: ChildHandle
    handler: AlertLogHandler
    counters: Store[AlertCounters]
    queue: AlertQueue


def build_channels(settings: Settings, clock: Clock) -> list[Channel]:
    a = settings.alerts
    channels: list[Channel] = []
    if a.telegram_token and a.telegram_chat_id:
        channels.append(TelegramChannel(a.telegram_api_url, a.telegram_token.reveal(), a.telegram_chat_id,
                                        a.timeout_seconds))
    if a.webhook_url:
        channels.append(WebhookChannel(a.webhook_url, a.webhook_secret.reveal(), a.timeout_seconds, clock))
    return channels


def assemble_alerts(infra: Infrastructure) -> AlertsHandles | None:
    """None when no channel is configured (nothing to send to: no handler, no actor)."""
    s = infra.settings
    channels = build_channels(s, infra.clock)
    if not channels:
        return None
    a = s.alerts
    counters = Store("alerts.counters", AlertCounters())
    queue = AlertQueue(a.queue_size)
    options = AlerterOptions(dedup_seconds=a.dedup_seconds, max_per_minute=a.max_per_minute,
                             max_attempts=a.max_attempts, retry_initial_seconds=a.retry_initial_seconds,
                             origin={"role": infra.role, "pid": os.getpid(), "host": socket.gethostname()})
    tree = infra.supervisor("alerts")
    alerter = tree.add(ChildSpec("alerter", lambda link: Alerter.start(
        link, channels, options, queue, counters, infra.clock, infra.scheduler)))
    rules = AlertRules(kinds=frozenset(a.kinds), exit_attempts=a.exit_attempts,
                       database_outage_seconds=a.database_outage_seconds, in_session=infra.calendar.is_open)
    handler = AlertLogHandler(rules, alerter.tell, queue, counters)
    # Installed now, not after the tree starts: a line logged while the other subtrees start (an expiring
    # token at start) waits in the alerter's handle until the alerter runs.
    logging.getLogger().addHandler(handler)

    def remove() -> None:
        logging.getLogger().removeHandler(handler)

    def status() -> dict[str, Any]:
        return {"channels": [c.name for c in channels], "queue": {"waiting": queue.waiting, "size": queue.size},
                **asdict(counters.get())}

    subtree = Subtree(infra.supervised(tree), status={"alerts": status}, before_stop=[remove])
    return AlertsHandles(subtree, alerter, handler, counters, queue)
