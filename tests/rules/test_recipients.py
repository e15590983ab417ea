"""``rules.recipients``: specs to ascending user-id streams, over an in-memory directory."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from rules.recipients import (
    PAGE_SIZE,
    EventRecipients,
    RecipientSpec,
    RecipientSpecError,
    lookup_path,
    parse_recipient_spec,
    resolve_recipients,
    resolve_spec,
)


@dataclass
class Person:
    email: str = ""
    active: bool = True
    staff: bool = False
    groups: frozenset[str] = frozenset()


@dataclass
class FakeDirectory:
    """``rules.recipients.Directory`` over a dict; records the paged calls."""

    people: dict[int, Person] = field(default_factory=dict)
    calls: list[tuple] = field(default_factory=list)

    def _active(self) -> list[int]:
        return sorted(pk for pk, p in self.people.items() if p.active)

    def active_ids(self, ids: Iterable[int]) -> list[int]:
        wanted = {i for i in ids if i is not None}
        return [pk for pk in self._active() if pk in wanted]

    def ids_by_email(self, emails: Iterable[str]) -> list[int]:
        wanted = {e.lower() for e in emails}
        return [pk for pk in self._active() if self.people[pk].email.lower() in wanted]

    def group_member_ids(self, group: str, after: int, limit: int) -> list[int]:
        self.calls.append(("group", group, after, limit))
        members = [pk for pk in self._active() if group in self.people[pk].groups and pk > after]
        return members[:limit]

    def staff_ids(self, after: int, limit: int) -> list[int]:
        self.calls.append(("staff", after, limit))
        return [pk for pk in self._active() if self.people[pk].staff and pk > after][:limit]


@pytest.fixture
def directory() -> FakeDirectory:
    return FakeDirectory(
        {
            1: Person("ann@example.com", groups=frozenset({"Support"})),
            2: Person("bob@example.com", staff=True),
            3: Person("cat@example.com", groups=frozenset({"Support", "Billing"})),
            4: Person("dan@example.com", active=False, staff=True, groups=frozenset({"Support"})),
            5: Person("Eve@Example.com", staff=True, groups=frozenset({"Billing"})),
            7: Person(
                "",
            ),
        }
    )


def event(payload=None, actor_id=None, explicit=()) -> EventRecipients:
    return EventRecipients(payload=payload or {}, actor_id=actor_id, explicit=tuple(explicit))


def ids(spec: str, evt: EventRecipients, directory: FakeDirectory) -> list[int]:
    return list(resolve_spec(parse_recipient_spec(spec), evt, directory))


# -- each kind ----------------------------------------------------------------------


def test_explicit_takes_ids_numeric_strings_and_emails(directory):
    evt = event(explicit=[3, "1", "eve@example.com", "nobody@example.com", 99, True, 4])
    assert ids("explicit", evt, directory) == [1, 3, 5]


def test_actor_is_the_acting_user_if_active(directory):
    assert ids("actor", event(actor_id=2), directory) == [2]
    assert ids("actor", event(actor_id=4), directory) == []  # inactive
    assert ids("actor", event(actor_id=None), directory) == []


def test_users_lists_fixed_ids_active_only(directory):
    assert ids("users: 5, 1,4,1", event(), directory) == [1, 5]


def test_group_members_active_only(directory):
    assert ids("group:Support", event(), directory) == [1, 3]
    assert ids("group:Billing", event(), directory) == [3, 5]
    assert ids("group:Nobody", event(), directory) == []


def test_staff(directory):
    assert ids("staff", event(), directory) == [2, 5]


# -- payload paths -------------------------------------------------------------------


def test_payload_path_to_a_single_id(directory):
    assert ids("payload:order.customer_id", event({"order": {"customer_id": 3}}), directory) == [3]


def test_payload_path_to_an_email_is_case_insensitive(directory):
    evt = event({"order": {"customer": " EVE@example.COM "}})
    assert ids("payload:order.customer", evt, directory) == [5]


def test_payload_path_to_a_list_of_ids_and_emails(directory):
    evt = event({"watchers": [5, "ann@example.com", "3", 5, None, {"id": 2}, False, 4]})
    assert ids("payload:watchers", evt, directory) == [1, 3, 5]


def test_payload_path_through_nested_lists(directory):
    evt = event({"thread": {"posts": [{"author": 2}, {"author": "cat@example.com"}]}})
    assert ids("payload:thread.posts.0.author", evt, directory) == [2]
    assert ids("payload:thread.posts.1.author", evt, directory) == [3]
    assert ids("payload:thread.posts.2.author", evt, directory) == []


def test_payload_path_missing_or_wrong_type_names_nobody(directory):
    assert ids("payload:order.customer_id", event({}), directory) == []
    assert ids("payload:order.customer_id", event({"order": "A1"}), directory) == []
    assert ids("payload:order.0", event({"order": {"0": 1}}), directory) == [1]


def test_lookup_path():
    data = {"a": {"b": [{"c": 1}, {"c": [2, 3]}]}}
    assert lookup_path(data, "a.b.1.c") == [2, 3]
    assert lookup_path(data, "a.b.1.c.1") == 3
    assert lookup_path(data, "a.b.5.c") is None
    assert lookup_path(data, "a.b.x") is None
    assert lookup_path(data, "a.z") is None


# -- merging --------------------------------------------------------------------------


def test_merge_dedups_and_stays_ascending(directory):
    specs = [parse_recipient_spec(s) for s in ("staff", "group:Support", "actor", "explicit")]
    evt = event(actor_id=3, explicit=["bob@example.com", 7])
    result = list(resolve_recipients(specs, evt, directory))
    assert result == [1, 2, 3, 5, 7]


def test_merge_of_nothing_is_empty(directory):
    assert list(resolve_recipients([], event(), directory)) == []
    assert list(resolve_recipients([RecipientSpec("actor")], event(), directory)) == []


def test_merge_is_lazy(directory):
    many = FakeDirectory({pk: Person(groups=frozenset({"All"})) for pk in range(1, 3 * PAGE_SIZE)})
    stream = resolve_recipients([RecipientSpec("group", "All")], event(), many)
    assert list(itertools.islice(stream, 3)) == [1, 2, 3]
    assert len(many.calls) == 1  # only the first page was read


# -- paging -----------------------------------------------------------------------------


def test_group_pages_over_more_than_a_page(directory):
    count = 2 * PAGE_SIZE + 123
    big = FakeDirectory({pk: Person(groups=frozenset({"All"})) for pk in range(10, 10 + count)})
    big.people[5] = Person(groups=frozenset({"All"}), active=False)
    result = list(resolve_spec(RecipientSpec("group", "All"), event(), big))
    assert result == list(range(10, 10 + count))
    assert big.calls == [
        ("group", "All", 0, PAGE_SIZE),
        ("group", "All", 9 + PAGE_SIZE, PAGE_SIZE),
        ("group", "All", 9 + 2 * PAGE_SIZE, PAGE_SIZE),
    ]


def test_exactly_a_page_reads_one_empty_page_more():
    exact = FakeDirectory({pk: Person(staff=True) for pk in range(1, PAGE_SIZE + 1)})
    assert len(list(resolve_spec(RecipientSpec("staff"), event(), exact))) == PAGE_SIZE
    assert exact.calls == [("staff", 0, PAGE_SIZE), ("staff", PAGE_SIZE, PAGE_SIZE)]


def test_merge_of_two_large_overlapping_groups():
    people = {}
    for pk in range(1, PAGE_SIZE + 2001):
        groups = set()
        if pk % 2 == 0:
            groups.add("Even")
        if pk % 3 == 0:
            groups.add("Three")
        people[pk] = Person(groups=frozenset(groups))
    directory = FakeDirectory(people)
    specs = [RecipientSpec("group", "Even"), RecipientSpec("group", "Three")]
    result = list(resolve_recipients(specs, event(), directory))
    assert result == [pk for pk in range(1, PAGE_SIZE + 2001) if pk % 2 == 0 or pk % 3 == 0]


# -- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("explicit", RecipientSpec("explicit")),
        ("  Actor ", RecipientSpec("actor")),
        ("STAFF", RecipientSpec("staff")),
        ("payload:order.customer_id", RecipientSpec("payload", "order.customer_id")),
        ("group: Support Team ", RecipientSpec("group", "Support Team")),
        ("users:1,2, 3", RecipientSpec("users", "1,2, 3")),
    ],
)
def test_parse(text, spec):
    assert parse_recipient_spec(text) == spec


def test_spec_prints_back_to_its_text():
    assert str(parse_recipient_spec("group:Support")) == "group:Support"
    assert str(parse_recipient_spec("staff")) == "staff"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("everyone", "unknown recipient kind 'everyone'"),
        ("", "unknown recipient kind ''"),
        ("group", "'group' needs an argument, e.g. 'group:Support'"),
        ("payload:", "'payload' needs an argument"),
        ("users", "'users' needs an argument"),
        ("staff:ops", "'staff' takes no argument"),
        ("actor:1", "'actor' takes no argument"),
        ("users:1,two", "'users:' takes user ids separated by commas, not 'two'"),
        ("users:1,,2", "not ''"),
        ("users:-1", "not '-1'"),
    ],
)
def test_parse_errors_name_the_problem(text, message):
    with pytest.raises(RecipientSpecError, match=message.replace("(", r"\(")) as caught:
        parse_recipient_spec(text)
    assert isinstance(caught.value, ValueError)


def test_unknown_kind_error_lists_the_kinds():
    with pytest.raises(RecipientSpecError) as caught:
        parse_recipient_spec("everyone")
    assert "actor, explicit, followers, group, payload, staff, topic, users" in str(caught.value)


def test_resolve_spec_refuses_an_unknown_kind(directory):
    with pytest.raises(RecipientSpecError):
        list(resolve_spec(RecipientSpec("everyone"), event(), directory))
