"""The Slack channel: the guide's `sendSlackAlert` payload, posted to an incoming webhook."""

from __future__ import annotations

from typing import Any

from hub.notify.channel import Channel
from hub.notify.message import Notification

#: the guide's `sendSlackAlert` colours
COLORS = {"critical": "#FF0000", "warning": "#FFA500", "info": "#0000FF"}
USERNAME = "Healthcare Monitoring"
ICON_EMOJI = ":hospital:"
FOOTER = "Healthcare DevOps Pipeline"


class SlackChannel(Channel):
    """Posts to a Slack incoming webhook; the webhook URL is the secret (its path is the token)."""

    name = "slack"

    def __init__(self, *, webhook_url: str, **kwargs: Any) -> None:
        super().__init__(url=webhook_url, **kwargs)

    def payload(self, n: Notification) -> dict[str, Any]:
        """The guide's `sendSlackAlert` payload for `n`."""
        return slack_payload(n)


def slack_payload(n: Notification) -> dict[str, Any]:
    """The guide's `sendSlackAlert` payload for `n`."""
    return {
        "username": USERNAME,
        "icon_emoji": ICON_EMOJI,
        "attachments": [{
            "color": COLORS.get(n.severity, COLORS["warning"]),
            "title": f"{n.severity.upper()} Alert",
            "text": _slack_escape(n.text),
            "footer": FOOTER,
            "ts": int(n.ts),
        }],
    }


def _slack_escape(text: str) -> str:
    """Slack reads <...> as links and mentions; a reason quoting one must show as typed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
