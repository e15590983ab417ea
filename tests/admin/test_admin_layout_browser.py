"""Admin's index and the delivery dashboard laid out right under the installed
Django (6.1): the "Delivery health" link one line high, the dashboard's
breadcrumbs in admin's current markup and style. Screenshots in
artifacts/screenshots/admin-index.png and dashboard-breadcrumbs.png."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

pytestmark = pytest.mark.browser

PASSWORD = "layout-admin-pw"


@pytest.fixture
def admin_page(page, live_server, db):
    get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("input[name=username]", "root")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_load_state()
    assert "/admin/login/" not in page.url
    return page


@pytest.mark.parametrize("width", [1280, 800])
def test_delivery_health_link_is_one_line_high(admin_page, live_server, screenshot, width):
    page = admin_page
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server.url}/admin/")
    link = page.get_by_role("link", name="Delivery health", exact=True)
    link.wait_for()
    screenshot(page, f"admin-index-{width}", full_page=False)
    box = link.bounding_box()
    line_height = link.evaluate(
        "el => parseFloat(getComputedStyle(el).lineHeight)"
        " || parseFloat(getComputedStyle(el).fontSize) * 1.2"
    )
    assert box is not None and box["height"] < 1.5 * line_height, (box, line_height)
    assert box["width"] > 60  # the words side by side, not one letter per line
    # It sits in admin's own module column, like the apps below it.
    apps = page.locator("#content-main .module").first.bounding_box()
    assert apps is not None and apps["width"] > 200


def test_dashboard_breadcrumbs_use_the_current_markup(admin_page, live_server, screenshot):
    page = admin_page
    page.goto(f"{live_server.url}{reverse('admin:notify_delivery_dashboard')}")
    crumbs = page.locator("ol.breadcrumbs")
    crumbs.wait_for()
    screenshot(page, "dashboard-breadcrumbs", full_page=False)
    items = crumbs.locator("li")
    assert items.count() == 4
    assert items.last.get_attribute("aria-current") == "page"
    tops = {round(items.nth(i).bounding_box()["y"]) for i in range(items.count())}
    assert len(tops) == 1  # one row
    background = crumbs.evaluate("el => getComputedStyle(el).backgroundColor")
    expected = page.evaluate(
        "getComputedStyle(document.documentElement).getPropertyValue('--breadcrumbs-bg')"
    )
    assert background not in ("rgba(0, 0, 0, 0)", "transparent"), background
    assert expected.strip()
