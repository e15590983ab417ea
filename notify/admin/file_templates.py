"""The message templates shipped as files, for admin to list next to the
overrides: read-only, each with an "Override" link that opens the add form
pre-filled with the file's text.

A file is found where the renderer looks (``NOTIFY["TEMPLATE_DIRS"]``, first
folder wins): ``<dir>/<message>/<part>`` for the default language and
``<dir>/<message>/<locale>/<part>`` for a locale.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, TemplateSyntaxError, nodes

from notify import conf
from notify.delivery.rendering import ALL_PARTS, is_message_dir
from notify.models import Event
from notify.scheduling.digests.message import DIGEST_MESSAGE
from notify.scheduling.digests.periods import DigestItem, digest_payload


@dataclass(frozen=True, slots=True)
class FileTemplate:
    message: str
    part: str
    locale: str  # "" = the default language
    path: Path
    relative: str  # "order_shipped/fr/email.subject", as found under its folder


def file_templates(directories: Iterable[str] | None = None) -> list[FileTemplate]:
    """Every template part shipped as a file, sorted like the overrides are."""
    found: dict[tuple[str, str, str], FileTemplate] = {}
    for directory in directories if directories is not None else conf.get("TEMPLATE_DIRS"):
        base = Path(directory)
        if not base.is_dir():
            continue
        for message_dir in sorted(p for p in base.iterdir() if is_message_dir(p)):
            folders = [("", message_dir)] + [
                (sub.name, sub) for sub in sorted(message_dir.iterdir()) if sub.is_dir()
            ]
            for locale, folder in folders:
                for part in ALL_PARTS:
                    path = folder / part
                    key = (message_dir.name, part, locale)
                    if path.is_file() and key not in found:
                        found[key] = FileTemplate(*key, path, str(path.relative_to(base)))
    return sorted(found.values(), key=lambda t: (t.message, t.part, t.locale))


def file_source(message: str, part: str, locale: str = "") -> str | None:
    """The text of one shipped part, or None (unknown message, part or locale)."""
    for template in file_templates():
        if (template.message, template.part, template.locale) == (message, part, locale):
            return template.path.read_text(encoding="utf-8")
    return None


def sample_payload(message: str, source: str, now: datetime) -> dict[str, Any]:
    """A payload to try an override of ``message`` with, at save time and in the
    preview: a digest's real shape; else the newest event's payload that this
    message was sent for; else every ``payload.<name>`` the source reads, as
    ``"<name>"``."""
    if message == DIGEST_MESSAGE:
        item = DigestItem("orders", "Orders", "Order A1 shipped", "https://example.com/", now)
        payload = digest_payload("daily", now.date().isoformat(), [item])
        for group in payload["groups"]:  # signed per group when the digest is sent
            group["unsubscribe_url"] = "https://example.com/unsubscribe/…"
        return payload
    payload = (
        Event.objects.filter(notifications__rule__message=message)
        .order_by("-pk")
        .values_list("payload", flat=True)
        .first()
    )
    if isinstance(payload, dict):
        return payload
    try:
        tree = Environment(autoescape=True).parse(source)  # parsed, never rendered
    except TemplateSyntaxError:
        return {}
    names = {
        node.attr
        for node in tree.find_all(nodes.Getattr)
        if isinstance(node.node, nodes.Name) and node.node.name == "payload"
    }
    return {name: f"<{name}>" for name in sorted(names)}
