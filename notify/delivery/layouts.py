"""Email layouts: every email renders into one shared page, its CSS inlined.

A message's email parts are its content; the layout adds what every email
has: the header with the brand (``EMAIL_BRAND_NAME``, ``EMAIL_BRAND_LOGO_URL``,
``EMAIL_BRAND_COLOR``), and the footer with the manage-preferences and
unsubscribe links. The HTML and the text layout render the same links, so
the text part stays in step with the HTML one.

The HTML is then inlined (``css_inline``): every rule of the layout's
``<style>`` lands in the ``style`` attributes of the elements it selects, so
a client that drops ``<style>`` (Gmail's app, Outlook) still shows it right;
``@media`` rules (narrow screens, ``prefers-color-scheme: dark``) cannot be
inlined and stay in a ``<style>`` for the clients that support them. Both
email paths, the SMTP bytes path and Django's ``EmailMultiAlternatives``, get
the finished HTML in the message.

Which layout: the one marked active in admin (``EmailLayout``), else the one
``EMAIL_LAYOUT`` names: an admin row of that name, else the files
``templates/layouts/<name>/layout.html`` and ``layout.txt``. Sources are
compiled once per process and reloaded when ops edit one (the "templates"
revision).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import css_inline
from django.core import checks
from jinja2 import Template
from jinja2.exceptions import TemplateError
from jinja2.utils import urlize
from markupsafe import Markup

from notify import conf
from notify.models import EmailLayout
from rules.models import ConfigRevision
from rules.sandbox import BoundedSandbox

LAYOUT_PARTS = ("layout.html", "layout.txt")
# What a layout may use besides the message context: the message and the brand.
LAYOUT_NAMES = ("content", "subject", "brand")
HEX_COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


@checks.register()
def check_email_layout(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The brand settings the layout reads (E080 logo, E081 colour); W080 a layout
    that is not shipped (it may still be an admin row, read at send time)."""
    found: list[checks.CheckMessage] = []
    logo = conf.get("EMAIL_BRAND_LOGO_URL") or ""
    if logo and not re.match(r"^https://[^\s\"'<>]+$", logo):
        found.append(
            checks.Error(
                f"NOTIFY['EMAIL_BRAND_LOGO_URL'] ({logo!r}) must be an absolute https:// URL: "
                "mail clients load it from the internet.",
                id="notify.E080",
            )
        )
    color = conf.get("EMAIL_BRAND_COLOR") or ""
    if not HEX_COLOR.match(color):
        found.append(
            checks.Error(
                f"NOTIFY['EMAIL_BRAND_COLOR'] ({color!r}) must be a colour as #rgb or #rrggbb.",
                id="notify.E081",
            )
        )
    name = conf.get("EMAIL_LAYOUT")
    if shipped_layout(name) is None:
        found.append(
            checks.Warning(
                f"NOTIFY['EMAIL_LAYOUT'] names '{name}', which is not in templates/layouts/: "
                "emails fail unless a layout of that name (or an active one) is in admin.",
                id="notify.W080",
            )
        )
    return found


class LayoutMissing(TemplateError):
    """The layout named in settings exists neither in admin nor on disk."""


@dataclass(frozen=True, slots=True)
class Layout:
    name: str
    html: Template
    text: Template


def brand_context() -> dict[str, str]:
    """The brand as layouts see it; the text colour is picked for contrast."""
    color = conf.get("EMAIL_BRAND_COLOR")
    return {
        "name": conf.get("EMAIL_BRAND_NAME"),
        "logo_url": conf.get("EMAIL_BRAND_LOGO_URL"),
        "color": color if HEX_COLOR.match(color or "") else "#3b5bdb",
        "text_color": contrast_text(color),
    }


def contrast_text(color: str) -> str:
    """White on a dark colour, near-black on a light one (WCAG relative luminance)."""
    if not HEX_COLOR.match(color or ""):
        return "#ffffff"
    digits = color[1:]
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)

    def channel(hex_pair: str) -> float:
        value = int(hex_pair, 16) / 255
        return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(digits[i : i + 2]) for i in (0, 2, 4))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#ffffff" if luminance < 0.4 else "#1d2430"


def text_as_html(text: str) -> Markup:
    """A message without an HTML part: its text as paragraphs, links clickable."""
    paragraphs = [p.strip() for p in text.strip().split("\n\n") if p.strip()]
    return Markup("\n").join(
        Markup("<p>{}</p>").format(
            # urlize escapes the text it is given, then adds the links.
            Markup("<br>\n").join(Markup(urlize(line)) for line in p.split("\n"))  # noqa: S704
        )
        for p in paragraphs
    )


def inline_css(html: str) -> str:
    """The layout's CSS moved onto the elements (``@media`` rules kept)."""
    return INLINER.inline(html)


class LayoutStore:
    """Layout sources from admin and files, compiled once per revision.
    ``context_names``: the names of the message context (``notify.delivery.rendering``)."""

    def __init__(self, context_names: tuple[str, ...]) -> None:
        self.names = (*context_names, *LAYOUT_NAMES)
        self._lock = threading.Lock()
        self._revision: int | None = None
        self._checked_at = 0.0
        self._layout: Layout | None = None
        self._text_env = BoundedSandbox(autoescape=False, **limits())
        self._html_env = BoundedSandbox(autoescape=True, **limits())

    def current(self) -> Layout:
        now = time.monotonic()
        if self._layout is not None and now - self._checked_at < conf.get("CONFIG_CHECK_INTERVAL"):
            return self._layout
        with self._lock:
            revision = ConfigRevision.current("templates")
            self._checked_at = time.monotonic()
            wanted = conf.get("EMAIL_LAYOUT")
            if self._layout is None or revision != self._revision or self._layout.name != wanted:
                self._layout = self.compile(*layout_source(wanted))
                self._revision = revision
            return self._layout

    def compile(self, name: str, html: str, text: str) -> Layout:
        try:
            self._html_env.check_source(html, self.names)
            self._text_env.check_source(text, self.names)
            return Layout(name, self._html_env.from_string(html), self._text_env.from_string(text))
        except TemplateError as exc:
            raise TemplateError(f"email layout '{name}': {exc}") from exc

    def wrap(self, subject: str, text: str, html: str, context: dict[str, Any]) -> tuple[str, str]:
        """The email's text and (inlined) HTML parts, rendered into the layout in use."""
        return self.render(self.current(), subject, text, html, context)

    def render(
        self, layout: Layout, subject: str, text: str, html: str, context: dict[str, Any]
    ) -> tuple[str, str]:
        """``layout`` around a message: (text, inlined HTML). Raises TemplateError."""
        common = {**context, "subject": subject, "brand": brand_context()}
        content = Markup(html) if html.strip() else text_as_html(text)  # noqa: S704 - rendered
        try:
            full_text = self._text_env.render_bounded(
                layout.text, {**common, "content": text.strip()}
            )
            full_html = self._html_env.render_bounded(layout.html, {**common, "content": content})
            inlined = inline_css(full_html)
        except Exception as exc:  # untrusted code: any failure is a render error
            raise TemplateError(f"email layout '{layout.name}': {exc}") from exc
        return full_text.strip() + "\n", inlined


def limits() -> dict[str, Any]:
    return {"max_output": conf.get("RENDER_MAX_OUTPUT"), "timeout": conf.get("RENDER_TIMEOUT")}


def layout_source(name: str) -> tuple[str, str, str]:
    """(name, html, text) of the layout in use: active row, named row, files."""
    row = (
        EmailLayout.objects.filter(active=True).values_list("name", "html", "text").first()
        or EmailLayout.objects.filter(name=name).values_list("name", "html", "text").first()
    )
    if row is not None:
        return row
    files = shipped_layout(name)
    if files is None:
        raise LayoutMissing(
            f"email layout '{name}' is neither in admin nor in templates/layouts/{name}/ "
            "(NOTIFY['EMAIL_LAYOUT'])"
        )
    return (name, *files)


def shipped_layout(name: str) -> tuple[str, str] | None:
    """The shipped files of layout ``name`` (html, text), or None."""
    for directory in conf.get("TEMPLATE_DIRS"):
        folder = Path(directory) / "layouts" / name
        if all((folder / part).is_file() for part in LAYOUT_PARTS):
            html, text = ((folder / p).read_text(encoding="utf-8") for p in LAYOUT_PARTS)
            return html, text
    return None


def shipped_layout_names() -> list[str]:
    names: set[str] = set()
    for directory in conf.get("TEMPLATE_DIRS"):
        base = Path(directory) / "layouts"
        if base.is_dir():
            names.update(p.name for p in base.iterdir() if shipped_layout(p.name))
    return sorted(names)
