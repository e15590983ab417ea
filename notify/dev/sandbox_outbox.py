"""``/dev/outbox/``: what the sandbox providers would have sent."""

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404
from django.shortcuts import render
from django.utils import timezone

from channels import sandbox
from notify import conf
from notify.dev.held_digests import held_digests


@staff_member_required
def sandbox_outbox(request):
    """What the sandbox providers would have sent (only when the sandbox is on), to
    staff only: it shows every user's messages, verification codes included.
    Above them, what is held for a digest and when that digest goes out."""
    if not conf.get("SANDBOX"):
        raise Http404("The sandbox is off.")
    records = sandbox.read(limit=200, directory=conf.get("SANDBOX_DIR"))
    context = {"records": records, "held": held_digests(timezone.now()), "debug": settings.DEBUG}
    return render(request, "dev_outbox.html", context)
