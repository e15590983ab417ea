"""System checks for claims: every channel has a finite time-out, and a batch's
last send fits in a claim (notify.E030-E032, W030).

A batch's claim is extended by its heartbeat until ``WORKER_BATCH_SECONDS``
(``notify.outbox.lease``); after that the batch starts no send, and the send in
flight must end, by its channel's time-out, within the claim's last
``CLAIM_TTL``. At the defaults: 60 s of batch, then at most 30 s (SMTP) or 10 s
(HTTP channels) of send, under a 120 s claim.
"""

from __future__ import annotations

import math

from django.core import checks

from notify import conf
from notify.registry import build_channel


def send_timeout(channel) -> float | None:
    """Seconds one send through ``channel`` may take, or None if it says nothing
    (local channels: in-app, the sandbox)."""
    reader = getattr(channel, "send_timeout", None)
    if callable(reader):
        return reader()
    return getattr(channel, "timeout", None) if hasattr(channel, "timeout") else None


def _finite_positive(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf


@checks.register()
def check_claims(app_configs=None, **kwargs):
    messages = []
    for key in ("CLAIM_TTL", "WORKER_BATCH_SECONDS"):
        if not _finite_positive(conf.get(key)):
            messages.append(
                checks.Error(
                    f"NOTIFY[{key!r}] is {conf.get(key)!r}: it must be a positive number of seconds.",
                    id="notify.E030",
                )
            )
    if messages:
        return messages
    claim_ttl = float(conf.get("CLAIM_TTL"))
    channels = conf.get("CHANNELS")
    if not isinstance(channels, dict):
        return []  # notify.E001 says so
    for alias in channels:
        try:
            channel = build_channel(alias)
        except Exception:  # noqa: S112 - notify.E001-E006 report a channel that cannot be built
            continue
        has_timeout = callable(getattr(channel, "send_timeout", None)) or hasattr(
            channel, "timeout"
        )
        if not has_timeout:
            continue
        timeout = send_timeout(channel)
        if not _finite_positive(timeout):
            messages.append(
                checks.Error(
                    f"channel '{alias}' has no finite time-out ({timeout!r}): a provider that "
                    "stops answering would hold its batch for ever.",
                    hint="Set the channel's TIMEOUT option (or the mailer's 'timeout') to a "
                    "number of seconds, e.g. 30.",
                    id="notify.E031",
                )
            )
        elif timeout >= claim_ttl:
            messages.append(
                checks.Warning(
                    f"channel '{alias}' may wait {timeout:g} s for one send, not less than "
                    f"CLAIM_TTL ({claim_ttl:g} s): the send in flight when a batch reaches "
                    "WORKER_BATCH_SECONDS can outlast its claim, and another worker may send "
                    "that message again.",
                    hint="Lower the channel's TIMEOUT or raise NOTIFY_CLAIM_TTL.",
                    id="notify.W030",
                )
            )
    return messages
