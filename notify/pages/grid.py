"""Which cells of the settings grid a user is shown.

A cell (category x channel) is shown when the category's rules can send on
that channel and the user has an address for it or can add one on the page.
Anything else would be a tick that can never send. A category no active rule
uses yet shows every channel: ops may add one, and the user's choice is kept
for it. Hidden cells are neither drawn nor read back from the form, so a
stored choice survives while its cell is hidden. The API keeps every cell.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from notify import conf
from notify.models import ContactPoint
from notify.pages.addresses import addable_kinds
from notify.pages.prefs import Column, Preferences
from rules.models import Rule

Kind = ContactPoint.Kind
# Kinds a user adds on the settings page: typed addresses, and a browser
# registering itself for Web Push. FCM and APNs tokens come from apps only.
PAGE_DEVICE_KINDS = frozenset({Kind.WEBPUSH})


@dataclass(frozen=True, slots=True)
class Grid:
    """The columns drawn (in settings order) and each category's shown aliases;
    ``no_address``: columns the user has no address for yet (they can add one)."""

    columns: list[Column]
    shown: dict[int, frozenset[str]]  # category id -> aliases shown
    no_address: frozenset[str]


def rule_channels_by_category(
    rules: Iterable[tuple[int, Sequence[str]]], default: Sequence[str]
) -> dict[int, set[str]]:
    """Category id -> the aliases its rules send on (a rule without channels
    sends on the default ones)."""
    by_category: dict[int, set[str]] = {}
    for category_id, channels in rules:
        by_category.setdefault(category_id, set()).update(channels or default)
    return by_category


def plan_grid(
    columns: Sequence[Column],
    category_ids: Sequence[int],
    rule_channels: dict[int, set[str]],
    user_kinds: set[str],
    addable: set[str],
) -> Grid:
    """Pure: the grid for these columns, categories, rules and addresses."""
    reachable = {
        c.alias
        for c in columns
        if c.address_kind is None or c.address_kind in user_kinds or c.address_kind in addable
    }
    every = {c.alias for c in columns}
    shown = {pk: frozenset(rule_channels.get(pk, every) & reachable) for pk in category_ids}
    drawn = set().union(*shown.values()) if shown else set()
    return Grid(
        columns=[c for c in columns if c.alias in drawn],
        shown=shown,
        no_address=frozenset(
            c.alias
            for c in columns
            if c.alias in drawn and c.address_kind is not None and c.address_kind not in user_kinds
        ),
    )


def user_grid(user: Any, current: Preferences) -> Grid:
    """The database edge: the user's rules and addresses, then ``plan_grid``."""
    category_ids = [c.pk for c in current.categories]
    rules = Rule.objects.filter(is_active=True, category_id__in=category_ids).values_list(
        "category_id", "channels"
    )
    kinds = set(ContactPoint.objects.filter(user_id=user.pk).values_list("kind", flat=True))
    if conf.get("USER_EMAIL_IS_CONTACT") and getattr(user, "email", ""):
        kinds.add(Kind.EMAIL)
    return plan_grid(
        current.columns,
        category_ids,
        rule_channels_by_category(rules, tuple(conf.get("DEFAULT_CHANNELS"))),
        kinds,
        set(addable_kinds()) | PAGE_DEVICE_KINDS,
    )
