"""Notifiers: where tabml sends alerts (run failures), one implementation per deployment."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from abc import ABC, abstractmethod

from dagster import ConfigurableResource

log = logging.getLogger("tabml.alerts")


class NotificationError(RuntimeError):
    """An alert that could not be delivered; never carries the webhook URL."""


class Notifier(ConfigurableResource, ABC):
    """Sends one short alert to the people who run tabml."""

    @abstractmethod
    def notify(self, title: str, body: str) -> None:
        """Deliver `title` and `body`; raise NotificationError when delivery fails."""


class LogNotifier(Notifier):
    """dev/test: alerts go to the `tabml.alerts` logger (the daemon's log in `dagster dev`)."""

    def notify(self, title: str, body: str) -> None:
        log.error("%s\n%s", title, body)


class SlackWebhookNotifier(Notifier):
    """A Slack incoming webhook; the URL comes from an EnvVar and is never logged."""

    webhook_url: str
    timeout_seconds: float = 10

    def notify(self, title: str, body: str) -> None:
        payload = json.dumps({"text": f"*{title}*\n{body}"}).encode()
        request = urllib.request.Request(
            self.webhook_url, data=payload, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            # The URL is a secret: name the failure, not the address.
            raise NotificationError(f"Slack webhook unreachable: {type(exc).__name__}") from None
        if status != 200:
            raise NotificationError(f"Slack webhook answered HTTP {status}, expected 200")
