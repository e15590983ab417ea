"""Small pages for operators and their tools: health, readiness, metrics."""

import ipaddress

from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from notify import conf
from notify.observability.health import readiness
from notify.observability.metrics import may_scrape, render


def healthz(request):
    """The process is up and serving requests."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request):
    """Ready for work: the database, the broker (if any), a scheduler leader and
    an outbox that keeps up. 503 names each failing check
    (``notify.observability.health``)."""
    ready, body = readiness()
    if not may_see_details(request):
        # Anyone may ask whether the service is ready; what failed and where (lock
        # file paths, pids, hosts) is for staff and for probes on this machine.
        body = {"status": body["status"]}
    return JsonResponse(body, status=200 if ready else 503)


def may_see_details(request) -> bool:
    """Staff, or a request from the loopback interface (a local probe)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return True
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


@never_cache
@require_safe
def metrics(request):
    """Prometheus metrics, counted in the database at scrape time, for the bearer
    token ``METRICS_TOKEN`` or an address in ``METRICS_ALLOWED_IPS``
    (``notify.observability.metrics``)."""
    if not may_scrape(
        request.headers.get("Authorization", ""), request.META.get("REMOTE_ADDR", "")
    ):
        if conf.get("METRICS_TOKEN"):
            response = HttpResponse("A valid bearer token is required.\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="notify metrics"'
            return response
        return HttpResponse(
            "Not allowed from this address: set NOTIFY['METRICS_TOKEN'] or "
            "NOTIFY['METRICS_ALLOWED_IPS'].\n",
            status=403,
        )
    data, content_type = render()
    return HttpResponse(data, content_type=content_type)
