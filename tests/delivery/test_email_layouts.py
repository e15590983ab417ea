"""Email layouts (``notify.delivery.layouts``): every email renders into one
layout (brand header, the message, the footer links), CSS inlined at send time,
a text part with the same links, dark-mode styles kept for clients that read
them; ops choose or override the layout in admin, with a preview.

The inlining check reads the HTML as a mail client that drops ``<style>``
would: what is left in a ``<style>`` may only be ``@media`` rules, and the
elements that carry the look (body, header, card, links, footer) have it in
their own ``style`` attribute.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.core import checks
from django.urls import reverse

from notify import trigger
from notify.delivery.layouts import check_email_layout, contrast_text, text_as_html
from notify.delivery.rendering import layout_store, sample_context, template_store
from notify.models import Delivery, EmailLayout
from notify.models.status import Status
from notify.runtime.worker import run_until_idle
from tests.channels.test_email_bytes import _parts, _send_both

URL = re.compile(r"https?://[^\s<>\"')]+")
PAYLOAD = {"order_id": "A1", "carrier": "DHL", "url": "https://shop.test/orders/A1?x=1&y=2"}


class Elements(HTMLParser):
    """Every element as (tag, attributes), and the text of every <style>."""

    def __init__(self, html: str):
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.styles: list[str] = []
        self._in_style = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)

    def with_class(self, name: str) -> list[dict[str, str]]:
        return [a for _, a in self.elements if name in a.get("class", "").split()]

    def hrefs(self) -> set[str]:
        return {a["href"] for t, a in self.elements if t == "a" and a.get("href")}


def style_of(attrs: dict[str, str]) -> dict[str, str]:
    return {
        k.strip(): v.strip()
        for k, _, v in (d.partition(":") for d in attrs.get("style", "").split(";"))
        if k.strip()
    }


def without_media_rules(css: str) -> str:
    """``css`` with its @media blocks (one level of nested braces) taken out."""
    return re.sub(r"@media[^{]*\{(?:[^{}]*\{[^{}]*\})*[^{}]*\}", "", css).strip()


def render(message: str = "order_shipped", payload: dict | None = None):
    context = {**sample_context(payload or PAYLOAD), "category": {"key": "o", "name": "Orders"}}
    return template_store.render(message, "email", context)


@pytest.fixture(autouse=True)
def fresh_layouts():
    layout_store._layout = None  # every test reads the settings and rows anew
    yield
    layout_store._layout = None  # every test reads the settings and rows anew


def test_the_html_looks_right_without_style_tags(db):
    parts = render()
    page = Elements(parts.html)
    # Left in <style>: only what cannot be inlined (narrow screens, dark mode).
    assert all(without_media_rules(css) == "" for css in page.styles), page.styles
    # The look is on the elements themselves.
    body = style_of(next(a for t, a in page.elements if t == "body"))
    assert body["background-color"] == "#f3f4f7" and body["color"] == "#1d2430"
    assert "font-family" in body
    [header] = page.with_class("header")
    assert style_of(header)["background-color"] == "#3b5bdb"
    [brand] = page.with_class("brand")
    assert style_of(brand)["color"] == "#ffffff"
    [card] = page.with_class("card")
    assert style_of(card)["background-color"] == "#ffffff"
    [container] = page.with_class("container")
    assert style_of(container)["max-width"] == "600px"
    paragraphs = [a for t, a in page.elements if t == "p"]
    assert paragraphs and all(style_of(p)["margin"] == "0 0 16px 0" for p in paragraphs)
    track = next(a for t, a in page.elements if t == "a" and "shop.test" in a["href"])
    assert style_of(track)["color"] == "#3b5bdb"
    [footer] = page.with_class("footer")
    assert style_of(footer)["font-size"] == "12px"
    # Nothing left for a client to fetch or run.
    assert "<link" not in parts.html and "<script" not in parts.html


def test_the_text_part_carries_the_same_links(db):
    parts = render()
    html_links = Elements(parts.html).hrefs()
    text_links = set(URL.findall(parts.text))
    assert html_links == text_links
    assert {
        "http://127.0.0.1:8000/",
        "http://127.0.0.1:8000/settings/notifications/",
        "http://127.0.0.1:8000/unsubscribe/sample/",
        "https://shop.test/orders/A1?x=1&y=2",
    } == html_links
    assert parts.text.startswith("Hi Sam,\n\nYour order A1 is on its way with DHL.")
    assert "Unsubscribe from Orders emails: http://127.0.0.1:8000/unsubscribe/sample/" in parts.text


def test_dark_mode_styles_are_kept_for_the_clients_that_read_them(db):
    html = render().html
    assert '<meta name="color-scheme" content="light dark">' in html
    assert '<meta name="supported-color-schemes" content="light dark">' in html
    [css] = Elements(html).styles
    dark = css[css.index("@media (prefers-color-scheme: dark)") :]
    assert "background-color: #1f242b !important" in dark  # beats the inlined light colours


def test_brand_name_logo_and_colour_come_from_settings(db, settings):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "EMAIL_BRAND_NAME": "Acme Shop",
        "EMAIL_BRAND_LOGO_URL": "https://cdn.acme.test/logo.png",
        "EMAIL_BRAND_COLOR": "#ffd43b",  # light: the brand name turns dark for contrast
    }
    page = Elements(render().html)
    [header] = page.with_class("header")
    assert style_of(header)["background-color"] == "#ffd43b"
    [brand] = page.with_class("brand")
    assert style_of(brand)["color"] == "#1d2430"
    [logo] = [a for t, a in page.elements if t == "img"]
    assert logo["src"] == "https://cdn.acme.test/logo.png"
    assert "Acme Shop" in render().html and "Acme Shop: http://127.0.0.1:8000/" in render().text


def test_contrast_text():
    assert contrast_text("#000") == "#ffffff"
    assert contrast_text("#3b5bdb") == "#ffffff"
    assert contrast_text("#ffffff") == "#1d2430"


def test_a_message_without_an_html_part_gets_one_from_its_text(db):
    parts = render("notify_test", {"channel_label": "Email"})
    page = Elements(parts.html)
    assert page.with_class("card")  # in the layout
    assert page.hrefs() == set(URL.findall(parts.text))
    html = text_as_html("Hi <b>\n\nSee https://x.test/?a=1&b=2 now")
    assert str(html) == (
        "<p>Hi &lt;b&gt;</p>\n"
        '<p>See <a href="https://x.test/?a=1&amp;b=2">https://x.test/?a=1&amp;b=2</a> now</p>'
    )


def test_the_layout_escapes_what_the_payload_says(db):
    parts = render(payload={"order_id": "<script>x</script>", "carrier": "a&b"})
    assert "<script>x</script>" not in parts.html
    assert "&lt;script&gt;x&lt;/script&gt;" in parts.html


def test_a_layout_email_through_both_smtp_paths(db, settings, smtp_peer):
    """The bytes path (channels.mimebytes) and Django's EmailMultiAlternatives
    send the layout's inlined HTML and its text alike."""
    settings.MAILERS = {**settings.MAILERS, "bytes-smtp": smtp_peer.mailer(timeout=5)}
    parts = render()
    fast, slow, _ = _send_both(smtp_peer, parts.subject, parts.text, parts.html)
    assert _parts(fast) == _parts(slow)
    html = fast.get_body(("html",)).get_content()
    assert html.replace("\r\n", "\n").rstrip() == parts.html.rstrip()
    assert 'style="background-color: #3b5bdb;' in html


def test_the_worker_sends_the_email_in_the_layout(db, smtp_mailer, make_user, make_rule):
    alice = make_user("alice")
    make_rule(channels=["email"])
    trigger("order.shipped", PAYLOAD, recipients=[alice])
    run_until_idle()
    assert Delivery.objects.get().status == Status.SENT
    [email] = smtp_mailer.messages
    assert Elements(email.html).with_class("header")
    assert Elements(email.html).hrefs() == set(URL.findall(email.text))
    assert any("/unsubscribe/" in link for link in URL.findall(email.text))


# -- ops: choose or override the layout in admin -------------------------------------------------

PLAIN_HTML = (
    "<html><head><style>.m { color: #222; }</style></head><body>"
    '<div class="m">{{ content }}</div><p><a href="{{ settings_url }}">Settings</a>'
    '{% if unsubscribe_url %} <a href="{{ unsubscribe_url }}">Unsubscribe</a>{% endif %}</p>'
    "</body></html>"
)
PLAIN_TEXT = (
    "{{ content }}\n\nSettings: {{ settings_url }}\n"
    "{% if unsubscribe_url %}Unsubscribe: {{ unsubscribe_url }}{% endif %}"
)


def test_the_layout_marked_active_in_admin_is_used_by_the_next_email(admin_client):
    add = reverse("admin:notify_emaillayout_add")
    form = admin_client.get(add)
    assert "{{ content }}" in form.content.decode()  # starts from the shipped layout
    response = admin_client.post(
        add, {"name": "plain", "active": "on", "html": PLAIN_HTML, "text": PLAIN_TEXT}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    layout = EmailLayout.objects.get(name="plain")
    page = admin_client.get(reverse("admin:notify_emaillayout_change", args=[layout.pk]))
    preview = page.content.decode()
    assert "<iframe sandbox" in preview and "Track your parcel" in preview  # the sample message
    assert "Settings: http://127.0.0.1:8000/settings/notifications/" in preview  # the text part

    parts = render()
    assert '<div class="m" style="color: #222;">' in parts.html
    assert "header" not in parts.html
    assert parts.text.endswith("Unsubscribe: http://127.0.0.1:8000/unsubscribe/sample/\n")

    # Another layout marked active takes the mark; the shipped one comes back when none is.
    admin_client.post(
        add, {"name": "plain2", "active": "on", "html": PLAIN_HTML, "text": PLAIN_TEXT}
    )
    assert list(EmailLayout.objects.filter(active=True).values_list("name", flat=True)) == [
        "plain2"
    ]
    EmailLayout.objects.all().delete()
    assert Elements(render().html).with_class("header")


def test_a_row_named_like_the_shipped_layout_overrides_it(db):
    EmailLayout.objects.create(name="default", html=PLAIN_HTML, text=PLAIN_TEXT)
    assert '<div class="m"' in render().html


@pytest.mark.parametrize(
    ("html", "text", "says"),
    [
        (PLAIN_HTML.replace("{{ content }}", ""), PLAIN_TEXT, "{{ content }} (the message)"),
        (PLAIN_HTML, PLAIN_TEXT.replace("{{ settings_url }}", ""), "{{ settings_url }}"),
        (
            PLAIN_HTML.split("{% if")[0] + "</p></body></html>",
            PLAIN_TEXT,
            "{{ unsubscribe_url }} (one-click unsubscribe",
        ),
        (PLAIN_HTML + "{{ payload.__class__ }}", PLAIN_TEXT, "is not allowed (private attribute)"),
        (PLAIN_HTML + "{% if %}", PLAIN_TEXT, "syntax error"),
    ],
)
def test_a_bad_layout_is_refused_and_says_why(admin_client, html, text, says):
    response = admin_client.post(
        reverse("admin:notify_emaillayout_add"),
        {"name": "bad", "active": "on", "html": html, "text": text},
    )
    assert response.status_code == 200
    assert says in response.content.decode().replace("&#x27;", "'").replace("&quot;", '"')
    assert not EmailLayout.objects.exists()


def test_brand_settings_are_checked_at_start_up(settings):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "EMAIL_BRAND_LOGO_URL": "http://cdn.test/logo.png",
        "EMAIL_BRAND_COLOR": "blue",
        "EMAIL_LAYOUT": "fancy",
    }
    found = {m.id: m for m in check_email_layout()}
    assert set(found) == {"notify.E080", "notify.E081", "notify.W080"}
    assert isinstance(found["notify.W080"], checks.Warning)
    assert "must be an absolute https:// URL" in found["notify.E080"].msg
