"""Action buttons of an in-app item, defined in its template.

The ``inapp`` part of a message is a title line and a body; lines at its end of
the form ``action: <label> | <url>`` are taken off the body and become buttons
(a label and a link) shown by the embeddable bell (``<notify-inbox>``)::

    {{ actor.name }} commented on {{ payload.title }}
    {{ payload.comment | truncate(140) }}
    action: Reply | {{ site_url }}/posts/{{ payload.post_id }}#reply
    action: Mute thread | /threads/{{ payload.thread }}/mute

A URL must be http(s) or a same-site path (``store.safe_link``): any other
(``javascript:``, ``//host``) drops that action and is logged, so a payload can
never put script into a page. At most ``MAX_ACTIONS`` are kept.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger("notify.inbox")

MAX_ACTIONS = 3
MAX_LABEL = 60
ACTION_LINE = re.compile(r"^\s*action:\s*(?P<label>[^|]+?)\s*\|\s*(?P<url>\S+)\s*$", re.IGNORECASE)


def safe_link(url: str) -> str:
    """The link if it is http(s) or a same-site path, else "" (an event payload
    must not be able to put ``javascript:`` into a page)."""
    url = (url or "").strip()
    if url.startswith("/") and not url.startswith("//") and "\\" not in url:
        return url
    if url.lower().startswith(("https://", "http://")):
        return url
    return ""


def split_actions(text: str) -> tuple[str, list[dict[str, str]]]:
    """``(body, actions)``: the trailing ``action:`` lines of ``text`` parsed,
    in template order, and the body without them."""
    lines = text.rstrip().split("\n")
    found: list[dict[str, str]] = []
    while lines:
        match = ACTION_LINE.match(lines[-1])
        if match is None:
            break
        lines.pop()
        label, url = match["label"].strip()[:MAX_LABEL], safe_link(match["url"])
        if url:
            found.append({"label": label, "url": url[:1000]})
        else:
            log.warning("in-app action %r dropped: its URL is not http(s) or a path", label)
    found.reverse()
    if len(found) > MAX_ACTIONS:
        log.warning("in-app item has %d actions; the first %d are kept", len(found), MAX_ACTIONS)
    return "\n".join(lines).rstrip(), found[:MAX_ACTIONS]
