"""A leader killed mid-digest (kill -9 of a real ``manage.py notify scheduler``)
while a second scheduler stands by, on PostgreSQL (leader election by advisory
lock, ``notify.runtime.leader``).

300 users have a daily digest due; the SMTP peer takes 50 ms per message, so the
leader's digest batches are in flight for seconds. The leader is killed once
the peer has accepted 60 digests (mid-batch); the standby takes over. Counted
at the peer: every user gets exactly one digest (one ``X-Notify-Delivery``
value), every digest has its own id, and the only extra copy allowed is the one
digest in flight in the killed process (same id: a receiver that drops
duplicates by the header, as README says, keeps one). Before the fix the killed
leader's whole batch of 50 was sent again. With ``SENDS_IN_FLIGHT`` 64 the
leader has 8 digests in flight (email's own limit), and a kill may send those
8 again, no more.

One in flight runs at the defaults, the default claim time included: the
killed leader's claimed batch waits out its ``CLAIM_TTL`` (120 s) before the
standby sends it. With ``SENDS_IN_FLIGHT`` 64 the claim time is shortened
(``CLAIM_TTL`` 8 s) so the take-over is quick; the leader extends its claim as
it goes (every third of it), and
``test_digest_exactly_once.py::test_a_live_senders_claim_never_expires`` is the
live leader's twin at the default claim time.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from notify import conf, trigger
from notify.fanout.pipeline import process_event
from notify.models import Category, CategoryPreference, Delivery, Digest, UserSettings
from notify.models.status import Status
from rules.models import Rule
from tests.scaleout import (
    process_env,
    scheduler,
    seed_group,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

USERS = 300
KILL_AT = 60  # digests accepted by the peer when the leader is killed
TTL = 8.0


def due_digests_for(count: int) -> None:
    """``count`` users whose daily digest (two items) is due now."""
    category = Category.objects.create(key="orders", name="Orders")
    group = seed_group("crew", count)
    users = list(get_user_model().objects.filter(groups=group))
    hour = timezone.now().hour
    UserSettings.objects.bulk_create(
        [UserSettings(user=u, timezone="UTC", digest_hour=hour) for u in users]
    )
    CategoryPreference.objects.bulk_create(
        [CategoryPreference(user=u, category=category, mode="daily") for u in users]
    )
    Rule.objects.create(
        name="crew",
        event_type="order.shipped",
        category=category,
        recipients=["group:crew"],
        channels=["email"],
        message="order_shipped",
    )
    for order in ("A1", "A2"):
        process_event(trigger("order.shipped", {"order_id": order}).pk)
    waiting = Delivery.objects.filter(status=Status.DIGEST)
    assert waiting.count() == 2 * count
    # Waiting since before this hour's digest time: due at the first tick.
    waiting.update(updated_at=timezone.now() - timedelta(hours=2))


@pytest.mark.parametrize(
    ("overrides", "bound"),
    [
        ({}, 1),  # the defaults: one in flight, the claim time of 120 s
        ({"SENDS_IN_FLIGHT": 64, "CLAIM_TTL": TTL}, 8),  # email's own CONCURRENCY then: 8
    ],
    ids=["defaults", "sends-in-flight-64"],
)
def test_leader_killed_mid_digest_sends_no_user_two_digests(
    postgres, tmp_path, smtp_peer, overrides, bound
):
    """Counted at the peer: the extra copies a kill causes are at most the
    digests in flight (``bound``), each with the same ``X-Notify-Delivery``."""
    due_digests_for(USERS)
    smtp_peer.latency = 0.05
    claim_ttl = overrides.get("CLAIM_TTL", conf.DEFAULTS["CLAIM_TTL"])
    env = process_env(tmp_path / "var", overrides=overrides)
    env.update(
        NOTIFY_EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        NOTIFY_EMAIL_OPTIONS=json.dumps(smtp_peer.mailer_options(timeout=10)),
    )
    first = scheduler("first", env, tmp_path)
    second = scheduler("second", env, tmp_path)
    try:
        first.start().wait_ready()
        assert wait_until(lambda: "is the leader" in first.text(), 30), first.text()
        second.start().wait_ready()
        assert wait_until(lambda: len(smtp_peer.messages) >= KILL_AT, 60), first.text()[-3000:]
        first.kill()
        assert wait_until(lambda: "is the leader" in second.text(), 30), second.text()
        # The killed leader's claimed batch goes out once its claim has expired.
        done = wait_until(
            lambda: Digest.objects.filter(status=Status.SENT).count() == USERS, claim_ttl + 120
        )
        assert done, (Counter(Digest.objects.values_list("status", flat=True)), second.text())
    finally:
        first.stop()
        second.stop()

    ids_by_user: dict[str, set[str]] = defaultdict(set)
    copies: Counter[str] = Counter()
    per_user: Counter[str] = Counter()
    for message in smtp_peer.messages:
        [to] = message.rcpt_tos
        per_user[to] += 1
        ids_by_user[to].add(message.headers["X-Notify-Delivery"])
        copies[message.headers["X-Notify-Delivery"]] += 1
    assert len(per_user) == USERS
    twice = [u for u, n in per_user.items() if n > 1]
    assert len(twice) <= bound, f"{len(twice)} users got two copies"  # those in flight, at most
    assert [u for u, ids in ids_by_user.items() if len(ids) > 1] == []  # no user two digests
    expected = {f"digest-{pk}" for pk in Digest.objects.values_list("pk", flat=True)}
    assert set(copies) == expected  # every digest its own id
    extra = sum(n - 1 for n in copies.values())
    assert extra <= bound, copies.most_common(10)  # at most those in flight when killed
    assert smtp_peer.peak_in_flight == bound  # the killed leader had that many in flight
    # Our books: one sent attempt per digest, none re-claimed but the killed one's.
    attempts = Counter(Digest.objects.values_list("attempts", flat=True))
    assert attempts[1] >= USERS - 50, attempts
