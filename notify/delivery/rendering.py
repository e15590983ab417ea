"""Message templates: find, compile once per process, render in the sandbox.

A message is a folder ``templates/<message>/`` with one file per part
(``email.subject``, ``email.txt``, ``email.html``, ``sms``, ``chat``,
``inapp``, ``push``) and optional locale folders (``templates/<message>/fr/sms``). Ops
override any part in admin (``MessageTemplate``). Lookup for locale ``pt-br``:
``pt-br``, then ``pt``, then the default, each first in admin, then on disk.

Rendering produces the channel's parts only; HTML parts are autoescaped,
everything else is plain text. An email's parts are then rendered into the
email layout (``notify.delivery.layouts``), its CSS inlined.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Template, meta
from jinja2.exceptions import TemplateError

from notify import conf
from notify.delivery.batch import and_others
from notify.delivery.layouts import LayoutStore
from notify.models import MessageTemplate
from rules.models import ConfigRevision
from rules.sandbox import BoundedSandbox

log = logging.getLogger("notify.delivery.rendering")

# The names a message template may use; the dispatcher provides all of them.
CONTEXT_NAMES = (
    "batch",
    "click_url",
    "payload",
    "event",
    "actor",
    "recipient",
    "category",
    "notification",
    "site_url",
    "settings_url",
    "inbox_url",
    "unsubscribe_url",
)

PARTS_BY_FORMAT: dict[str, tuple[tuple[str, bool], ...]] = {
    # (part, required)
    "email": (("email.subject", True), ("email.txt", True), ("email.html", False)),
    "sms": (("sms", True),),
    "chat": (("chat", True),),
    "inapp": (("inapp", True),),
    # A push notification: the first line is its title, the rest its body.
    "push": (("push", True),),
    # Signed webhooks carry the event as data: the chat part, if the message has
    # one, is their text; a message without it (or no message folder) is data-only.
    "webhook": (("chat", False),),
}
ALL_PARTS = ("email.subject", "email.txt", "email.html", "sms", "chat", "inapp", "push")


class MessageTemplateMissing(TemplateError):
    """The message, or a required part of it, does not exist."""


class RenderError(TemplateError):
    """A template failed to render; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class RenderedParts:
    subject: str = ""
    text: str = ""
    html: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"subject": self.subject, "text": self.text, "html": self.html}


def locale_candidates(locale: str, default: str) -> list[str]:
    """``pt-BR`` -> ``["pt-br", "pt", ""]``; the empty string is the default files."""
    out: list[str] = []
    for candidate in (locale, locale.split("-")[0] if locale else "", default):
        candidate = (candidate or "").lower().replace("_", "-")
        if candidate and candidate not in out:
            out.append(candidate)
    out.append("")
    return out


def make_environments() -> tuple[BoundedSandbox, BoundedSandbox]:
    limits = {"max_output": conf.get("RENDER_MAX_OUTPUT"), "timeout": conf.get("RENDER_TIMEOUT")}
    environments = (
        BoundedSandbox(autoescape=False, **limits),
        BoundedSandbox(autoescape=True, **limits),
    )
    for env in environments:  # "Alice and 24 others" for batched workflows (notify.delivery.batch)
        env.filters["and_others"] = and_others
    return environments


@dataclass(frozen=True, slots=True)
class LoadedTemplates:
    """One complete load of the overrides, published as a whole.

    Templates compiled from it are cached in its own ``compiled`` dict, so a
    template (or a "missing") found against one load never lands in another.
    """

    revision: int
    overrides: dict[tuple[str, str, str], str]
    compiled: dict[tuple[str, str, str], Template | None]
    text_env: BoundedSandbox
    html_env: BoundedSandbox


class TemplateStore:
    """Sources from admin overrides and files, compiled templates cached per process.

    The overrides table is small, so it is read whole and kept until the
    "templates" revision moves. Safe under threads: a load runs under a lock
    and is published in one assignment once complete, and a reader that finds
    nothing loaded yet waits for the load instead of reading an empty store
    (which cached "missing" for admin-only messages after every restart).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: LoadedTemplates | None = None
        self._checked_at = 0.0

    def clear(self) -> None:
        """Forget everything, as a fresh process starts (tests)."""
        with self._lock:
            self._loaded = None
            self._checked_at = 0.0

    def env_for(self, part: str) -> BoundedSandbox:
        loaded = self.loaded()
        return loaded.html_env if part.endswith(".html") else loaded.text_env

    def loaded(self) -> LoadedTemplates:
        """The current complete load, refreshed when its check is due."""
        self.refresh()
        loaded = self._loaded
        assert loaded is not None  # refresh() returns only once a load is published
        return loaded

    def refresh(self, force: bool = False) -> None:
        interval = conf.get("CONFIG_CHECK_INTERVAL")
        if not force and self._loaded is not None:
            if time.monotonic() - self._checked_at < interval:
                return
        with self._lock:
            # Another thread may have loaded while this one waited for the lock.
            current = self._loaded
            if not force and current is not None:
                if time.monotonic() - self._checked_at < interval:
                    return
            revision = ConfigRevision.current("templates")
            if force or current is None or current.revision != revision:
                self._loaded = self._load(revision)
            self._checked_at = time.monotonic()

    def _load(self, revision: int) -> LoadedTemplates:
        rows = MessageTemplate.objects.values_list("message", "part", "locale", "body")
        overrides = {(m, p, loc.lower()): body for m, p, loc, body in rows}
        text_env, html_env = make_environments()
        log.info("templates loaded: revision %s, %d admin overrides", revision, len(overrides))
        return LoadedTemplates(revision, overrides, {}, text_env, html_env)

    def source(self, message: str, part: str, locale: str) -> str | None:
        """The source for exactly this locale ("" = default), or None."""
        return self._source(self.loaded(), message, part, locale)

    @staticmethod
    def _source(loaded: LoadedTemplates, message: str, part: str, locale: str) -> str | None:
        override = loaded.overrides.get((message, part, locale))
        if override is not None:
            return override
        for directory in conf.get("TEMPLATE_DIRS"):
            path = (
                Path(directory) / message / locale / part
                if locale
                else Path(directory) / message / part
            )
            if path.is_file():
                return path.read_text(encoding="utf-8")
        return None

    def get(self, message: str, part: str, locale: str) -> Template | None:
        return self._get(self.loaded(), message, part, locale)

    def _get(
        self, loaded: LoadedTemplates, message: str, part: str, locale: str
    ) -> Template | None:
        compiled = loaded.compiled
        default = conf.get("DEFAULT_LOCALE")
        for candidate in locale_candidates(locale, default):
            key = (message, part, candidate)
            if key in compiled:
                template = compiled[key]
                if template is not None:
                    return template
                continue
            source = self._source(loaded, message, part, candidate)
            if source is None:
                compiled[key] = None
                continue
            env = loaded.html_env if part.endswith(".html") else loaded.text_env
            try:
                tree = env.check_source(source, CONTEXT_NAMES)
                template = env.from_string(source)
                # What it reads: digests share an item's title among recipients
                # when it reads nothing of the recipient's (``context_names``).
                template.context_names = frozenset(meta.find_undeclared_variables(tree))
            except TemplateError as exc:
                raise RenderError(f"{message}/{part}: {exc}") from exc
            except RecursionError as exc:
                raise RenderError(f"{message}/{part}: nested too deeply") from exc
            compiled[key] = template
            return template
        return None

    def exists(self, message: str) -> bool:
        if any(m == message for m, _, _ in self.loaded().overrides):
            return True
        return any(is_message_dir(Path(d) / message) for d in conf.get("TEMPLATE_DIRS"))

    def render(
        self, message: str, message_format: str, context: dict[str, Any], locale: str = ""
    ) -> RenderedParts:
        """Render the parts ``message_format`` needs; raise a TemplateError."""
        parts = PARTS_BY_FORMAT.get(message_format)
        if parts is None:
            raise MessageTemplateMissing(f"unknown message format '{message_format}'")
        loaded = self.loaded()  # every part from one complete load
        out: dict[str, str] = {}
        for part, required in parts:
            template = self._get(loaded, message, part, locale)
            if template is None:
                if required:
                    raise MessageTemplateMissing(f"message '{message}' has no '{part}' part")
                continue
            env = loaded.html_env if part.endswith(".html") else loaded.text_env
            try:
                out[part] = env.render_bounded(template, context)
            except TemplateError as exc:
                raise RenderError(f"{message}/{part}: {exc}") from exc
            except Exception as exc:  # untrusted code: any failure is a render error
                raise RenderError(f"{message}/{part}: {type(exc).__name__}: {exc}") from exc
        parts = shape(message_format, out)
        if message_format == "email":  # every email renders into the layout
            text, html = layout_store.wrap(parts.subject, parts.text, parts.html, context)
            parts = RenderedParts(subject=parts.subject, text=text, html=html)
        return parts


def shape(message_format: str, parts: dict[str, str]) -> RenderedParts:
    """Turn rendered parts into subject/text/html for the channel."""
    if message_format == "email":
        subject = " ".join(parts["email.subject"].split())  # one line, no header injection
        return RenderedParts(
            subject=subject,
            text=parts["email.txt"].strip() + "\n",
            html=parts.get("email.html", ""),
        )
    if message_format in ("inapp", "push"):
        title, _, body = parts[message_format].strip().partition("\n")
        return RenderedParts(subject=title.strip(), text=body.strip())
    key = "sms" if message_format == "sms" else "chat"
    return RenderedParts(text=parts.get(key, "").strip())


def validate_template_source(
    part: str, source: str, sample_payload: dict[str, Any] | None = None
) -> str:
    """Check and trial-render ops-written source; return the preview or raise
    ``TemplateError`` with a message fit for a form error."""
    text_env, html_env = make_environments()
    env = html_env if part.endswith(".html") else text_env
    env.check_source(source, CONTEXT_NAMES)
    template = env.from_string(source)
    try:
        return env.render_bounded(template, sample_context(sample_payload or {}))
    except TemplateError:
        raise
    except Exception as exc:
        raise RenderError(f"{type(exc).__name__}: {exc}") from exc


def sample_context(payload: dict[str, Any]) -> dict[str, Any]:
    """A render context with placeholder values around ``payload``."""
    site = conf.get("SITE_URL").rstrip("/")
    return {
        "payload": payload,
        "event": {"id": 0, "type": "sample.event", "received_at": "2026-01-01T00:00:00Z"},
        "actor": {"id": 0, "username": "actor", "name": "Sample Actor", "is_staff": False},
        "recipient": {
            "id": 0,
            "username": "recipient",
            "first_name": "Sam",
            "last_name": "Sample",
            "name": "Sam Sample",
        },
        "category": {"key": "sample", "name": "Sample"},
        "click_url": f"{site}/r/sample",
        "batch": {
            "count": 3,
            "actors": ["Sample Actor", "Bo", "Cy"],
            "others": 2,
            "summary": "Sample Actor and 2 others",
            "events": [],
        },
        "notification": {"id": 0},
        "site_url": site,
        "settings_url": f"{site}/settings/notifications/",
        "inbox_url": f"{site}/inbox/",
        "unsubscribe_url": f"{site}/unsubscribe/sample/",
    }


def is_message_dir(path: Path) -> bool:
    """A message folder holds at least one template part (``pages/`` does not)."""
    return path.is_dir() and any((path / part).is_file() for part in ALL_PARTS)


def messages_available() -> Iterable[str]:
    names: set[str] = set()
    for directory in conf.get("TEMPLATE_DIRS"):
        base = Path(directory)
        if base.is_dir():
            names.update(p.name for p in base.iterdir() if is_message_dir(p))
    names.update(MessageTemplate.objects.values_list("message", flat=True).distinct())
    return sorted(names)


template_store = TemplateStore()
layout_store = LayoutStore(CONTEXT_NAMES)


def context_names(template: Template) -> frozenset[str] | None:
    """The context names ``template`` reads, or None when unknown (not compiled
    by the template store)."""
    return getattr(template, "context_names", None)
