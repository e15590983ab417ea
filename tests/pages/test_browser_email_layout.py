"""An email rendered through the layout (``notify.delivery.layouts``), shown in
headless Chromium as a mail client would: light, dark (``prefers-color-scheme``),
on a phone, and with every ``<style>`` removed (Gmail's app, Outlook), where it
must look the same as with them in light mode: the inlined styles carry it.

Screenshots: ``email-layout-light.png``, ``email-layout-dark.png``,
``email-layout-phone.png``, ``email-layout-no-style.png``.
"""

from __future__ import annotations

import re

import pytest

from notify.delivery.rendering import layout_store, sample_context, template_store

pytestmark = [pytest.mark.browser, pytest.mark.django_db]

PAYLOAD = {"order_id": "A1", "carrier": "DHL", "url": "https://shop.test/orders/A1"}
LOOK = """() => {
  const pick = (sel) => {
    const s = getComputedStyle(document.querySelector(sel));
    return [s.backgroundColor, s.color, s.fontSize, s.paddingTop, s.maxWidth, s.fontFamily];
  };
  return Object.fromEntries(
    ['body', '.header', '.brand', '.card', '.card p', '.card a', '.footer', '.footer a', '.container']
      .map((sel) => [sel, pick(sel)]));
}"""


@pytest.fixture
def email_html():
    layout_store._layout = None
    context = {**sample_context(PAYLOAD), "category": {"key": "orders", "name": "Orders"}}
    return template_store.render("order_shipped", "email", context).html


def show(page, html: str) -> None:
    page.set_content(html, wait_until="load")


def test_the_layout_in_light_dark_on_a_phone_and_without_style_tags(page, screenshot, email_html):
    page.emulate_media(color_scheme="light")
    show(page, email_html)
    light = page.evaluate(LOOK)
    screenshot(page, "email-layout-light")
    assert light[".card"][0] == "rgb(255, 255, 255)"
    assert light[".header"][0] == "rgb(59, 91, 219)"  # the brand colour, #3b5bdb

    page.emulate_media(color_scheme="dark")
    dark = page.evaluate(LOOK)
    screenshot(page, "email-layout-dark")
    assert dark[".card"][0] == "rgb(31, 36, 43)"
    assert dark["body"][0] == "rgb(20, 23, 28)"
    assert dark[".card"][1] == "rgb(230, 232, 236)"  # light text on the dark card
    assert dark[".header"][0] == light[".header"][0]  # the brand stays

    # A client that drops <style>: the inlined styles alone give the light look.
    page.emulate_media(color_scheme="light")
    show(page, re.sub(r"<style\b.*?</style>", "", email_html, flags=re.S))
    assert page.evaluate("document.querySelectorAll('style').length") == 0
    assert page.evaluate(LOOK) == light
    screenshot(page, "email-layout-no-style")

    page.set_viewport_size({"width": 375, "height": 700})
    show(page, email_html)
    screenshot(page, "email-layout-phone")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scroll
    assert page.evaluate("getComputedStyle(document.querySelector('.card')).paddingLeft") == "16px"
