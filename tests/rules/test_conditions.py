"""Rule conditions and the match index: pure functions, no database."""

from __future__ import annotations

import pytest

from rules.conditions import CompiledCondition, ConditionError, compile_condition
from rules.index import build_index, compile_rule
from rules.recipients import RecipientSpec

STAFF = {"id": 1, "username": "sam", "is_staff": True}
CUSTOMER = {"id": 2, "username": "ann", "is_staff": False}


def context(payload=None, actor=STAFF, event_type="order.shipped"):
    return {"payload": payload or {}, "event": {"id": 1, "type": event_type}, "actor": actor}


# -- compile ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "payload.total > 100",
        "payload.total > 100 and actor.is_staff",
        "event.type == 'order.shipped' or 'vip' in payload.tags",
        "payload.country in ['FR', 'BE'] and not actor.is_staff",
        "payload.lines|length > 2",
        "payload.get('coupon') is none",
        "  payload.total  ",
    ],
)
def test_good_conditions_compile(source):
    compiled = compile_condition(source)
    assert isinstance(compiled, CompiledCondition)
    assert compiled.source == source.strip()


@pytest.mark.parametrize("source", ["", "   ", None])
def test_an_empty_condition_is_always_true(source):
    assert compile_condition(source) is None


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("payload.total >", "syntax error in condition"),
        ("payload.total > > 1", "syntax error in condition"),
        ("payload.total }} {{ 1", "syntax error in condition"),
        ("{% if 1 %}", "syntax error in condition"),
        ("user.is_staff", "unknown name 'user'"),
        ("request and payload", "unknown name 'request'"),
        ("payload.__class__", "access to '__class__' is not allowed"),
        ("payload['__class__']", "access to '__class__' is not allowed"),
        ("actor._state", "access to '_state' is not allowed"),
        ("cycler.__init__.__globals__", "not allowed"),
    ],
)
def test_bad_conditions_are_refused_with_a_reason(source, words):
    with pytest.raises(ConditionError) as info:
        compile_condition(source)
    assert words in str(info.value)


# -- evaluate --------------------------------------------------------------------------

BIG_STAFF_ORDER = "payload.total > 100 and actor.is_staff"


@pytest.mark.parametrize(
    ("payload", "actor", "expected"),
    [
        ({"total": 150}, STAFF, True),
        ({"total": 150}, CUSTOMER, False),
        ({"total": 100}, STAFF, False),
        ({"total": 99.5}, STAFF, False),
    ],
)
def test_evaluate(payload, actor, expected):
    condition = compile_condition(BIG_STAFF_ORDER)
    assert condition.evaluate(context(payload, actor)) is expected


def test_a_missing_key_is_an_error_not_false():
    condition = compile_condition(BIG_STAFF_ORDER)
    with pytest.raises(ConditionError, match=r"condition failed.*total"):
        condition.evaluate(context({"amount": 150}))


def test_an_event_without_an_actor_is_an_error():
    condition = compile_condition("actor.is_staff")
    with pytest.raises(ConditionError, match="condition failed"):
        condition.evaluate(context(actor=None))


def test_a_type_error_is_a_condition_error():
    condition = compile_condition("payload.total > 100")
    with pytest.raises(ConditionError, match="TypeError"):
        condition.evaluate(context({"total": "lots"}))


def test_the_sandbox_guards_evaluation():
    with pytest.raises(ConditionError, match="unsafe"):
        compile_condition("payload|attr('__class__')").evaluate(context())
    with pytest.raises(ConditionError, match="limit"):
        compile_condition("('a' * 10**8)|length > 1").evaluate(context())


def test_short_circuit_skips_the_missing_key():
    condition = compile_condition("payload.vip is defined and payload.vip")
    assert condition.evaluate(context({})) is False
    assert condition.evaluate(context({"vip": True})) is True


# -- the index -------------------------------------------------------------------------


def row(id, event_type, *, priority=0, condition="", recipients=("explicit",), **extra):
    return {
        "id": id,
        "name": f"rule {id}",
        "event_type": event_type,
        "condition": condition,
        "category_id": 1,
        "recipients": list(recipients),
        "channels": ["email"],
        "message": "order_shipped",
        "priority": priority,
        **extra,
    }


def test_compile_rule_parses_recipients():
    rule = compile_rule(row(1, "order.shipped", recipients=["actor", "group:Support"]))
    assert rule.recipients == (RecipientSpec("actor"), RecipientSpec("group", "Support"))
    assert rule.channels == ("email",)
    assert rule.condition is None


def test_index_matches_exact_and_wildcard_types_by_priority():
    index = build_index(
        [
            row(1, "order.shipped"),
            row(2, "order.*", priority=10),
            row(3, "*", priority=-5),
            row(4, "order.shipped", priority=10),
            row(5, "order.cancelled", priority=100),
            row(6, "user.*", priority=100),
        ]
    )
    assert [m.rule.id for m in index.match("order.shipped", context())] == [2, 4, 1, 3]
    assert [m.rule.id for m in index.match("user.joined", context())] == [6, 3]
    assert [m.rule.id for m in index.match("invoice.paid", context())] == [3]
    assert set(index.by_type) == {"order.shipped", "order.cancelled"}
    assert {r.id for r in index.patterns} == {2, 3, 6}


def test_match_says_why_a_rule_did_not_match():
    index = build_index(
        [
            row(1, "order.shipped", condition="payload.total > 100"),
            row(2, "order.shipped", condition="payload.missing > 1"),
            row(3, "order.shipped"),
        ]
    )
    matches = {m.rule.id: m for m in index.match("order.shipped", context({"total": 5}))}
    assert (matches[1].matched, matches[1].reason) == (False, "condition is false")
    assert matches[2].matched is False
    assert "condition failed" in matches[2].reason
    assert (matches[3].matched, matches[3].reason) == (True, "")


def test_a_broken_row_is_reported_not_matched():
    index = build_index(
        [
            row(1, "order.shipped", condition="payload.__class__"),
            row(2, "order.shipped", recipients=["grp:Support"]),
            row(3, "order.shipped", condition="payload.total >"),
            row(4, "order.shipped"),
        ]
    )
    assert set(index.broken) == {1, 2, 3}
    assert "not allowed" in index.broken[1]
    assert "unknown recipient kind 'grp'" in index.broken[2]
    assert "syntax error" in index.broken[3]
    assert [m.rule.id for m in index.match("order.shipped", context())] == [4]


def test_a_deeply_nested_condition_is_a_condition_error():
    with pytest.raises(ConditionError):
        compile_condition("(" * 3000 + "1" + ")" * 3000)


@pytest.mark.parametrize(
    "source, where",
    [
        # The condition is wrapped in parentheses before the checks: the error must
        # still name what the user typed, where they typed it.
        ("payload.total > 1)", "line 1 column 18 (at ')'): unexpected ')'"),
        ("payload.total > > 1", "line 1 column 17 (at '>')"),
        ("payload.total >", "line 1 column 16 (at the end)"),
        ("payload.a == 1 and\n  (payload.b ==)", "line 2 column 16 (at ')')"),
        ("payload.x == 'a", 'line 1 column 14 (at "\'"): unexpected char "\'"'),
        ("payload.total }} {{ 1", "line 1 column 15 (at '}}')"),
    ],
)
def test_syntax_errors_point_at_the_users_own_text(source, where):
    with pytest.raises(ConditionError) as info:
        compile_condition(source)
    message = str(info.value)
    assert message.startswith("syntax error in condition, ")
    assert where in message
    assert "template" not in message
