"""``GET /api/docs/``: the OpenAPI document rendered by Swagger UI.

Swagger UI's files come from the ``drf-spectacular-sidecar`` package (its
``static/`` folder, served like ours), so the page works with no network
access: no CDN, and the online validator badge is switched off in
``notify/static/notify/api-docs.js``. DRF itself is not used.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe


@require_safe
def api_docs(request: HttpRequest) -> HttpResponse:
    """The page: Swagger UI pointed at ``/api/v1/openapi.json``."""
    return render(
        request,
        "api_docs.html",
        {"active": "api-docs", "schema_url": reverse("api:openapi")},
    )
