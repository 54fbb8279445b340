"""Alerts with severities, rate limiting and de-duplication, sent to the log, the status bus, a
record callback (the products database) and an optional webhook (Slack-compatible JSON).

Within ``window_s`` at most ``max_per_category`` alerts of one category are sent; the same alert
(category and key, the key defaulting to the message) is sent once per ``dedup_s``. What is held
back is counted per category and the count is added to the next alert of that category that
goes out, so an operator knows how many were folded.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.request
from collections import defaultdict, deque
from typing import Callable

from contimg.bus import Alert
from contimg.config import AlertsConfig

log = logging.getLogger(__name__)

__all__ = ["SEVERITIES", "AlertManager", "post_webhook"]

SEVERITIES = ("info", "warning", "critical")
_LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


def post_webhook(url: str, alert: Alert, *, timeout_s: float = 10.0) -> None:
    """POST ``alert`` as Slack-compatible JSON (``text``, plus ``severity``/``category``)."""
    body = json.dumps({"text": f"[contimg {alert.severity}] {alert.category}: {alert.message}",
                       "severity": alert.severity, "category": alert.category, "message": alert.message,
                       "at": alert.at}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - the operator's own URL
        resp.read()


class AlertManager:
    """``raise_alert`` decides, counts and sends. ``publish`` puts an `Alert` on the status bus
    (call from the event loop's thread); ``record`` (optional) stores it; webhooks go out from a
    daemon thread so a slow endpoint never blocks the caller."""

    def __init__(self, cfg: AlertsConfig, *, publish: Callable[[Alert], None],
                 record: Callable[[Alert], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.publish = publish
        self.record = record
        self.clock = clock
        self.webhook_url = os.environ.get("CONTIMG_ALERT_WEBHOOK") or cfg.webhook_url
        self._sent: dict[str, deque] = defaultdict(deque)
        self._last: dict[tuple[str, str], float] = {}
        self.suppressed: dict[str, int] = defaultdict(int)
        self.sent_count: dict[str, int] = defaultdict(int)
        self.webhook_errors = 0

    def raise_alert(self, severity: str, category: str, message: str, *, key: str | None = None) -> bool:
        """Send the alert unless the category's rate limit or de-duplication holds it back;
        returns whether it was sent."""
        if severity not in SEVERITIES:
            raise ValueError(f"alert severity must be one of {SEVERITIES}, got {severity!r}")
        now = self.clock()
        dedup_key = (category, key if key is not None else message)
        last = self._last.get(dedup_key)
        sent = self._sent[category]
        while sent and now - sent[0] >= self.cfg.window_s:
            sent.popleft()
        if (last is not None and now - last < self.cfg.dedup_s) or len(sent) >= self.cfg.max_per_category:
            self.suppressed[category] += 1
            log.debug("alert held back (%s): %s", category, message)
            return False
        held = self.suppressed.pop(category, 0)
        if held:
            message = f"{message} (+{held} similar held back by the rate limit)"
        sent.append(now)
        self._last[dedup_key] = now
        self.sent_count[category] += 1
        alert = Alert(severity, category, message)
        log.log(_LOG_LEVEL[severity], "ALERT %s [%s] %s", severity, category, message)
        self.publish(alert)
        if self.record is not None:
            self.record(alert)
        if self.webhook_url and SEVERITIES.index(severity) >= SEVERITIES.index(self.cfg.webhook_min_severity):
            threading.Thread(target=self._post, args=(alert,), name="alert-webhook", daemon=True).start()
        return True

    def _post(self, alert: Alert) -> None:
        try:
            post_webhook(self.webhook_url, alert)
        except Exception as exc:  # noqa: BLE001 - a webhook failure is logged, never fatal
            self.webhook_errors += 1
            log.warning("alert webhook %s failed: %s", self.webhook_url, exc)
