"""Small pages: health and the sandbox outbox."""

from django.conf import settings
from django.http import Http404, JsonResponse
from django.shortcuts import render

from channels import sandbox

from . import conf


def healthz(request):
    """The process is up and serving requests."""
    return JsonResponse({"status": "ok"})


def sandbox_outbox(request):
    """What the sandbox providers would have sent (only when the sandbox is on)."""
    if not conf.get("SANDBOX"):
        raise Http404("The sandbox is off.")
    records = sandbox.read(limit=200, directory=conf.get("SANDBOX_DIR"))
    return render(request, "dev_outbox.html", {"records": records, "debug": settings.DEBUG})
