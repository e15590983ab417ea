"""Contact point actions on the settings page, and the email verification link.

Every contact point in a URL is looked up among the signed-in user's own
(``own_point``): anyone else's id is a 404 and changes nothing. Each action is
a POST (CSRF-checked); the email link's GET only shows a confirmation page.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from notify.models import ContactPoint
from notify.pages import contact_points
from notify.pages.addresses import LABELS, display
from notify.pages.contact_points import BadLink, ContactError
from notify.pages.forms import sentence
from notify.pages.settings import page_url, render_page


def own_point(request: HttpRequest, point_id: int) -> ContactPoint:
    return get_object_or_404(ContactPoint, pk=point_id, user_id=request.user.pk)


def refused(request: HttpRequest, point: ContactPoint, exc: ContactError) -> HttpResponse:
    return render_page(
        request, contact_errors={point.pk: {exc.field: [sentence(exc.message)]}}, status=400
    )


@login_required
@require_POST
def add(request: HttpRequest) -> HttpResponse:
    """Add a contact point and send its code or link at once."""
    kind = request.POST.get("kind", "")
    address = request.POST.get("address", "")
    try:
        point = contact_points.add(request.user, kind, address)
    except ContactError as exc:
        form = {"kind": kind, "address": address, "errors": {exc.field: [sentence(exc.message)]}}
        return render_page(request, add_form=form, status=400)
    try:
        sent = contact_points.send_verification(point)
    except ContactError as exc:
        messages.warning(request, f"{display(point)} is added, but {exc.message}.")
    else:
        messages.success(request, f"{display(point)} is added. {sent}")
    return redirect(page_url(f"contact-{point.pk}"))


@login_required
@require_POST
def verify_code(request: HttpRequest, point_id: int) -> HttpResponse:
    point = own_point(request, point_id)
    try:
        contact_points.check_code(point, request.POST.get("code", ""))
    except ContactError as exc:
        return refused(request, point, exc)
    messages.success(request, f"{display(point)} is verified.")
    return redirect(page_url(f"contact-{point.pk}"))


@login_required
@require_POST
def resend(request: HttpRequest, point_id: int) -> HttpResponse:
    point = own_point(request, point_id)
    try:
        sent = contact_points.send_verification(point)
    except ContactError as exc:
        return refused(request, point, exc)
    messages.success(request, sent)
    return redirect(page_url(f"contact-{point.pk}"))


@login_required
@require_POST
def make_primary(request: HttpRequest, point_id: int) -> HttpResponse:
    point = own_point(request, point_id)
    try:
        contact_points.make_primary(point)
    except ContactError as exc:
        return refused(request, point, exc)
    label = LABELS.get(point.kind, point.kind).lower()
    messages.success(request, f"{display(point)} is now your primary {label}.")
    return redirect(page_url(f"contact-{point.pk}"))


@login_required
@require_POST
def remove(request: HttpRequest, point_id: int) -> HttpResponse:
    point = own_point(request, point_id)
    contact_points.remove(point)
    messages.success(request, f"{display(point)} is removed.")
    return redirect(page_url("contacts"))


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def verify_email(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows what the link confirms; only the POST verifies (link scanners GET)."""
    try:
        if request.method == "POST":
            point = contact_points.confirm_link(token, request.user)
        else:
            point = contact_points.contact_for_link(token, request.user)
    except BadLink as exc:
        return render(
            request,
            "settings_verify_email.html",
            {"error": str(exc), "active": "settings"},
            status=400,
        )
    if request.method == "POST":
        messages.success(request, f"{point.address} is verified.")
        return redirect(page_url(f"contact-{point.pk}"))
    return render(request, "settings_verify_email.html", {"point": point, "active": "settings"})
