"""``/api/docs/``: Swagger UI over the OpenAPI document, from this site's own
static files (no CDN), linked from the home page."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest


@pytest.mark.django_db
def test_docs_page_loads_swagger_ui_from_our_static_files(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-schema-url="/api/v1/openapi.json"' in html
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "/static/notify/api-docs.js" in html
    # Every script and stylesheet is ours: nothing names another host.
    assert "https://" not in html.split("<main", 1)[0]
    for asset in (
        "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
        "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css",
        "/static/notify/api-docs.js",
    ):
        assert client.get(asset).status_code == 200, asset


@pytest.mark.django_db
def test_docs_page_is_get_only(client):
    assert client.post("/api/docs/").status_code == 405


def test_home_page_links_the_docs_for_visitors_and_staff(client, make_user):
    assert 'href="/api/docs/"' in client.get("/").content.decode()
    client.force_login(make_user("ada", is_staff=True))
    assert 'href="/api/docs/"' in client.get("/").content.decode()


@pytest.mark.browser
def test_docs_page_renders_every_operation_with_no_outside_request(
    page, live_server, screenshot, client
):
    """The page a person sees: Swagger UI lists the operations of the document,
    and the browser asked nothing of any host but this one."""
    doc = client.get("/api/v1/openapi.json").json()
    operations = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    hosts = set()
    page.on("request", lambda request: hosts.add(urlsplit(request.url).hostname))
    page.goto(f"{live_server.url}/")
    page.click("text=API reference")
    page.wait_for_url("**/api/docs/")
    page.locator(".opblock").first.wait_for()
    shown = {
        (
            block.locator(".opblock-summary-method").inner_text().strip(),
            block.locator(".opblock-summary-path").get_attribute("data-path"),
        )
        for block in page.locator(".opblock").all()
    }
    assert shown == operations
    assert hosts == {urlsplit(live_server.url).hostname}
    screenshot(page, "api-docs")
