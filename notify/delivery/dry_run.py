"""Dry runs at send time: what a dry-run rule's delivery would have sent,
rendered by the worker exactly as a real send would be, and kept as a skipped
attempt (provider ``dry_run``) instead of going to the channel.

Fan-out only writes references (``notify.fanout.policies``): a delivery to
render is pending with ``skip_reason`` ``dry_run``. Rendering here, not at
fan-out, keeps fan-out free of text and renders with the recipient's locale
and address as they are when it would have gone out.
"""

from __future__ import annotations

import logging

from django.utils import timezone
from jinja2.exceptions import TemplateError

from notify.delivery.message import build_message
from notify.delivery.outcomes import Target, done
from notify.fanout.policies import DRY_RUN
from notify.models import Delivery, DeliveryAttempt
from notify.models.status import Status
from notify.outbox.rows import Outcome
from notify.preferences.decide import UserPrefs, decide
from notify.preferences.directory import category_info

log = logging.getLogger("notify.delivery.dry_run")


def is_dry_run(delivery: Delivery) -> bool:
    """A reference fan-out wrote for a dry-run rule: render it, send nothing."""
    return delivery.skip_reason == DRY_RUN


def dry_run_outcome(
    delivery: Delivery,
    kind: tuple[str | None, str] | None,
    prefs: UserPrefs | None,
    config_error: str = "",
) -> Outcome:
    """Render ``delivery`` as a send would and record it skipped (``dry_run``).

    ``kind`` is the channel's (address kind, message format), ``None`` when it
    is not configured (``config_error`` says why). The address is the one
    preferences would send to now, whatever they decide; a template or channel
    error is kept on the attempt and never fails the worker."""
    started = timezone.now()
    fields: dict = {}
    try:
        if kind is None:
            raise LookupError(config_error or f"channel '{delivery.channel}' is not configured")
        address_kind, message_format = kind
        address, locale = "", ""
        if prefs is not None:
            locale = prefs.locale
            category = category_info(delivery.notification.category)
            address = decide(category, delivery.channel, address_kind, prefs, started).address
        fields["sent"] = build_message(delivery, message_format, address, locale).as_record()
    except TemplateError as exc:
        fields["error_code"], fields["error_message"] = "template", str(exc)
    except Exception as exc:  # a misconfigured channel: say so, never fail the worker
        log.warning("dry run of delivery %s not rendered: %s", delivery.pk, exc)
        fields["error_code"], fields["error_message"] = "config", str(exc)
    target = Target(delivery.pk, delivery.attempts)
    return done(
        target,
        started,
        Status.SKIPPED,
        DeliveryAttempt.Outcome.SKIPPED,
        provider=DRY_RUN,
        skip_reason=DRY_RUN,
        **fields,
    )
