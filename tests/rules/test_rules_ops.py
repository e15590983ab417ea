"""The pure parts of the ops controls: windows, throttle, fallback, dedup keys,
stop-after-this-rule, and the condition fast path (same answers as the sandbox)."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, time, timedelta

import pytest

from notify.fanout.payload import SENSITIVE as NOTIFY_SENSITIVE
from notify.outbox.rows import PlannedDelivery
from rules.bindings import SENSITIVE, build_binding_index, is_sensitive
from rules.conditions import ConditionError, _env, compile_condition, compile_expression
from rules.dedup import key_digest, window_end
from rules.fallback import NOT_NEEDED, FallbackError, apply_fallback, parse_fallback
from rules.index import build_index
from rules.throttle import ThrottleSpec, over_limit, throttle_deliveries
from rules.windows import ActiveWindow, WindowError, is_open, make_window, next_open

PARIS = "Europe/Paris"


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- active windows --------------------------------------------------------------------------

BUSINESS = ActiveWindow(frozenset(range(5)), time(9), time(17), PARIS)


@pytest.mark.parametrize(
    "at, opens",
    [
        (utc(2026, 11, 23, 7, 59, 59), utc(2026, 11, 23, 8)),  # Monday 08:59:59 Paris
        (utc(2026, 11, 23, 8), None),  # 09:00 exactly: open
        (utc(2026, 11, 23, 15, 59, 59), None),  # 16:59:59: still open
        (utc(2026, 11, 23, 16), utc(2026, 11, 24, 8)),  # 17:00 exactly: closed until Tuesday
        (utc(2026, 11, 27, 16, 30), utc(2026, 11, 30, 8)),  # Friday evening -> Monday
        (utc(2026, 11, 28, 12), utc(2026, 11, 30, 8)),  # Saturday
    ],
)
def test_business_hours(at, opens):
    assert next_open(BUSINESS, at) == opens
    assert is_open(BUSINESS, at) is (opens is None)


def test_business_hours_follow_dst():
    # Paris leaves summer time on Sunday 2026-10-25: 09:00 is 07:00 UTC before, 08:00 after.
    assert next_open(BUSINESS, utc(2026, 10, 23, 16)) == utc(2026, 10, 26, 8)
    assert next_open(BUSINESS, utc(2026, 10, 22, 6)) == utc(2026, 10, 22, 7)


def test_overnight_and_whole_day_windows():
    night = ActiveWindow(frozenset(), time(22), time(6), "UTC")
    assert next_open(night, utc(2026, 1, 1, 23)) is None
    assert next_open(night, utc(2026, 1, 2, 5, 59)) is None
    assert next_open(night, utc(2026, 1, 2, 6)) == utc(2026, 1, 2, 22)
    weekend = make_window([5, 6], None, None, "UTC")
    assert next_open(weekend, utc(2026, 11, 28, 0)) is None  # Saturday 00:00
    assert next_open(weekend, utc(2026, 11, 27, 23, 59)) == utc(2026, 11, 28)
    assert make_window([], None, None, "UTC") is None
    assert next_open(None, utc(2026, 1, 1)) is None


def test_window_errors_say_what_is_wrong():
    with pytest.raises(WindowError, match="time zone"):
        ActiveWindow(frozenset(), time(9), time(17), "Mars/Olympus")
    with pytest.raises(WindowError, match="0 \\(Monday\\)"):
        ActiveWindow(frozenset({7}), None, None, "UTC")
    assert BUSINESS.describe() == "Mon, Tue, Wed, Thu, Fri 09:00-17:00 Europe/Paris"


# -- throttle ----------------------------------------------------------------------------------


def test_over_limit_counts_what_came_before():
    spec = ThrottleSpec(limit=2, window=timedelta(hours=1))
    assert over_limit(spec, [1, 2, 3], {1: 2, 2: 1}) == {1}


@pytest.mark.parametrize("action", ["digest", "drop"])
def test_throttled_deliveries_are_recorded(action):
    deliveries = (
        PlannedDelivery("email", "pending"),
        PlannedDelivery("inapp", "pending"),
        PlannedDelivery("sms", "skipped", "no_address"),
        PlannedDelivery("chat", "digest", "daily"),
    )
    out = throttle_deliveries(
        deliveries, action, {"email": "email", "inapp": None, "sms": "phone", "chat": "slack"}
    )
    by_channel = {d.channel: (d.status, d.skip_reason) for d in out}
    assert by_channel["sms"] == ("skipped", "no_address")  # decided already: kept
    assert by_channel["chat"] == ("digest", "daily")
    if action == "digest":
        assert by_channel["email"] == ("digest", "throttled")
        assert by_channel["inapp"] == ("pending", "")  # the inbox shows it, as in digest mode
    else:
        assert by_channel["email"] == ("skipped", "throttled")
        assert by_channel["inapp"] == ("skipped", "throttled")


# -- fallback ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "email, sms_after",
    [
        (("skipped", "no_address"), ("pending", "")),
        (("skipped", "unverified_address"), ("pending", "")),
        (("skipped", "suppressed"), ("pending", "")),
        (("pending", ""), ("skipped", NOT_NEEDED)),
        (("skipped", "opted_out"), ("skipped", NOT_NEEDED)),
        (("digest", "daily"), ("skipped", NOT_NEEDED)),
    ],
)
def test_sms_only_when_the_email_cannot_reach(email, sms_after):
    deliveries = (PlannedDelivery("email", *email), PlannedDelivery("sms", "pending"))
    out = apply_fallback(deliveries, {"sms": "email"})
    assert (out[1].status, out[1].skip_reason) == sms_after
    assert out[0] == deliveries[0]


def test_fallback_setting_is_checked():
    assert parse_fallback({"sms": "email"}, ["email", "sms"]) == {"sms": "email"}
    assert parse_fallback({}) == {}
    for bad, message in [
        ({"sms": "sms"}, "itself"),
        ({"sms": "email", "email": "sms"}, "circle"),
        (["sms"], "write it as"),
    ]:
        with pytest.raises(FallbackError, match=message):
            parse_fallback(bad)
    with pytest.raises(FallbackError, match="'chat' is not one of the rule's channels"):
        parse_fallback({"chat": "email"}, ["email", "sms"])


# -- dedup keys -------------------------------------------------------------------------------


def test_dedup_keys():
    assert key_digest(None) is None and key_digest("") is None and key_digest([]) is None
    assert key_digest("A-1")[0] == key_digest("A-1")[0]
    assert key_digest({"a": 1, "b": 2})[0] == key_digest({"b": 2, "a": 1})[0]
    assert key_digest(1)[0] != key_digest("1")[0]
    assert window_end(utc(2026, 1, 1), timedelta(minutes=10)) == utc(2026, 1, 1, 0, 10)
    expression = compile_expression("[payload.order_id, payload.status]")
    assert expression.evaluate({"payload": {"order_id": 7, "status": "paid"}}) == [7, "paid"]


# -- stop after this rule -----------------------------------------------------------------------


def rule_row(id, **fields):
    return {
        "id": id,
        "name": f"r{id}",
        "event_type": "order.shipped",
        "category_id": 1,
        "message": "m",
        **fields,
    }


def test_stop_after_this_rule_leaves_lower_priorities_unmatched():
    index = build_index(
        [
            rule_row(1, priority=10, condition="payload.vip", stop_processing=True),
            rule_row(2, priority=5),
            rule_row(3, priority=10),  # same priority, higher id: after rule 1
            rule_row(4, priority=20),
        ]
    )
    vip = {
        (m.rule.id, m.matched, m.reason)
        for m in index.match("order.shipped", {"payload": {"vip": True}})
    }
    assert vip == {
        (4, True, ""),
        (1, True, ""),
        (3, False, "stopped by rule 'r1' (higher priority)"),
        (2, False, "stopped by rule 'r1' (higher priority)"),
    }
    assert [r.id for r in index.candidates("order.shipped")] == [4, 1, 3, 2]
    plain = index.match("order.shipped", {"payload": {"vip": False}})
    assert [(m.rule.id, m.matched) for m in plain] == [(4, True), (1, False), (3, True), (2, True)]


# -- secrets -------------------------------------------------------------------------------------


def test_the_secret_rule_is_the_same_as_notify_events():
    assert NOTIFY_SENSITIVE is SENSITIVE  # one rule, not two kept in step
    for name in (
        "password",
        "api_key",
        "reset_token",
        "secret",
        "pin",
        "password_hash",
        "otp_secret",
    ):
        assert is_sensitive(name), name
    for name in ("email", "username", "spinner", "tokenizer_name", "status", "shipping"):
        assert not is_sensitive(name), name


def test_the_binding_index_drops_secrets_edited_into_the_database():
    index = build_binding_index(
        [
            {
                "id": 1,
                "model": "auth.user",
                "signal": "created",
                "event_type": "user.created",
                "payload_fields": ["username", "password"],
            }
        ]
    )
    assert index.get("auth.user", "created")[0].payload_fields == ("username",)


# -- the condition fast path gives the sandbox's answers ------------------------------------------

EXPRESSIONS = [
    "payload.total > 100",
    "payload.total > 100 and payload.status == 'paid'",
    "payload.status in ['paid', 'shipped'] or payload.vip",
    "not payload.vip",
    "payload.missing is defined",
    "payload.missing is not defined or payload.total >= 5",
    "payload.items.0.sku == 'A'",
    "payload['status'] != 'new'",
    "payload.total - 5 * 2 > 3",
    "payload.total / 0 > 1",
    "payload.total // 3 == 1",
    "payload.total % 7",
    "-payload.total < 0",
    "payload.name|lower == 'ada'",
    "payload.name|upper == 'ADA'",
    "payload.tags|length > 1",
    "'x' in payload.tags",
    "payload.status is none",
    "payload.total is number and payload.total is integer",
    "payload.vip is boolean",
    "1 < payload.total < 50",
    "payload.total if payload.vip else 0",
    "actor.is_staff",
    "actor and actor.is_staff",
    "event.type == 'order.shipped'",
    "payload.missing",
    "payload.missing == 1",
    "payload.name > 1",
    "payload.items",
    "payload.keys",
    "payload.name.upper",
    "payload.nested.deep.value == 3",
    "(payload.total, payload.status)",
    "[payload.total, payload.missing]",
    "payload.total > 10 and payload.missing",
    "payload.tags[1] == 'y'",
    "payload.tags[5] == 'y'",
    "payload.tags[-1]",
]
PAYLOADS = [
    {
        "total": 12,
        "status": "paid",
        "vip": True,
        "name": "Ada",
        "tags": ["x", "y"],
        "items": [{"sku": "A"}],
        "nested": {"deep": {"value": 3}},
    },
    {
        "total": 150,
        "status": "new",
        "vip": False,
        "name": "BOB",
        "tags": [],
        "items": [],
        "nested": {},
    },
    {
        "total": 2.5,
        "status": None,
        "vip": None,
        "name": 5,
        "tags": "xy",
        "items": "A",
        "nested": None,
    },
    {},
]
ACTORS = [None, {"id": 1, "is_staff": True}, {"id": 2, "is_staff": False}]


def sandbox_only(source: str, context: dict):
    """The sandbox's verdict: ("ok", value) or ("error", message)."""
    expression = _env.compile_expression(source, undefined_to_none=False)
    condition = compile_condition(source)
    slow = type(condition)(condition.source, expression)  # no fast path
    try:
        return "ok", slow.evaluate(context)
    except ConditionError as exc:
        return "error", str(exc)


def test_fast_path_covers_the_common_conditions():
    assert compile_condition("payload.total > 100 and payload.status == 'paid'")._fast is not None
    assert compile_condition("payload.items|map(attribute='sku')|list")._fast is None
    assert compile_condition("payload.keys() | length")._fast is None


@pytest.mark.parametrize("source", EXPRESSIONS)
def test_fast_path_answers_like_the_sandbox(source):
    condition = compile_condition(source)
    for payload, actor in itertools.product(PAYLOADS, ACTORS):
        context = {"payload": payload, "event": {"type": "order.shipped", "id": 1}, "actor": actor}
        try:
            fast = "ok", condition.evaluate(context)
        except ConditionError as exc:
            fast = "error", str(exc)
        slow = sandbox_only(source, context)
        # Error messages may quote object addresses; compare without them.
        strip = lambda v: (v[0], re.sub(r"0x[0-9a-f]+", "", str(v[1])))  # noqa: E731
        assert strip(fast) == strip(slow), (source, payload, actor)
