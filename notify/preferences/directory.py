"""The database edge of fan-out and dispatch: users, preferences, addresses.

Each loader takes a chunk of user ids and issues a fixed number of queries,
whatever the chunk's size, so fan-out's query count grows with chunks only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.contrib.auth import get_user_model
from django.db.models import Q
from django.db.models.functions import Lower

from notify import conf
from notify.models import (
    Category,
    CategoryPreference,
    ChannelPreference,
    ContactPoint,
    Subscription,
    Suppression,
    UserSettings,
)
from notify.preferences.decide import Address, CategoryInfo, UserPrefs
from notify.preferences.devices import DEVICE_KINDS


class DatabaseDirectory:
    """``rules.recipients.Directory`` backed by the user table."""

    def __init__(self) -> None:
        self.users = get_user_model().objects.filter(is_active=True)

    def active_ids(self, ids: Iterable[int]) -> list[int]:
        ids = [i for i in ids if i is not None]
        if not ids:
            return []
        return list(self.users.filter(pk__in=ids).order_by("pk").values_list("pk", flat=True))

    def ids_by_email(self, emails: Iterable[str]) -> list[int]:
        emails = list(emails)
        if not emails:
            return []
        by_contact = ContactPoint.objects.filter(
            kind=ContactPoint.Kind.EMAIL, address__in=emails, verified_at__isnull=False
        ).values_list("user_id", flat=True)
        query = Q(pk__in=by_contact)
        for email in emails:  # case-insensitive match on User.email
            query |= Q(email__iexact=email)
        return list(self.users.filter(query).order_by("pk").values_list("pk", flat=True).distinct())

    def group_member_ids(self, group: str, after: int, limit: int) -> list[int]:
        return list(
            # One group: membership is unique per user, no DISTINCT needed.
            self.users.filter(groups__name=group, pk__gt=after)
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )

    def staff_ids(self, after: int, limit: int) -> list[int]:
        return list(
            self.users.filter(is_staff=True, pk__gt=after)
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )

    def subscriber_ids(self, target: str, after: int, limit: int) -> list[int]:
        """Active users subscribed to ``target`` (``app.model:pk`` or ``topic:<name>``)."""
        return list(
            Subscription.objects.filter(target=target, user_id__gt=after, user__is_active=True)
            .order_by("user_id")
            .values_list("user_id", flat=True)[:limit]
        )


def category_info(category: Category) -> CategoryInfo:
    return CategoryInfo(
        id=category.pk,
        key=category.key,
        critical=category.critical,
        opt_in=category.opt_in,
        default_mode=category.default_mode,
        default_channels=frozenset(category.default_channels)
        if category.default_channels
        else None,
    )


def users_filter(user_ids: Sequence[int], field: str = "user_id") -> Q:
    """Select a chunk's users. Recipients arrive as ascending ids, usually
    dense (group members, staff), so a range is far cheaper to send than an
    ``IN`` list of thousands of parameters; rows of users in the range but not
    in the chunk are ignored by the caller. Sparse chunks use ``IN``."""
    ids = sorted(user_ids)
    if not ids:
        return Q(pk__in=[])
    if ids[-1] - ids[0] < 2 * len(ids):
        return Q(**{f"{field}__gte": ids[0], f"{field}__lte": ids[-1]})
    return Q(**{f"{field}__in": ids})


# What a missing UserSettings row means (the model's defaults).
NO_SETTINGS = (None, "UTC", "", None, None, 8, 0)


def load_preferences(
    user_ids: Sequence[int], category_ids: Iterable[int], address_kinds: Iterable[str]
) -> dict[int, UserPrefs]:
    """Everything ``decide`` needs for these users, in six queries."""
    category_ids = list(set(category_ids))
    kinds = sorted(set(address_kinds))
    wanted = set(user_ids)
    in_chunk = users_filter(user_ids)
    users = (
        get_user_model()
        .objects.filter(users_filter(user_ids, "pk"))
        .values_list("pk", "is_active", "email")
    )
    modes: dict[int, dict[int, str]] = {}
    for user_id, category_id, mode in CategoryPreference.objects.filter(
        in_chunk, category_id__in=category_ids
    ).values_list("user_id", "category_id", "mode"):
        modes.setdefault(user_id, {})[category_id] = mode
    cells: dict[int, dict[tuple[int, str], bool]] = {}
    for user_id, category_id, channel, enabled in ChannelPreference.objects.filter(
        in_chunk, category_id__in=category_ids
    ).values_list("user_id", "category_id", "channel", "enabled"):
        cells.setdefault(user_id, {})[(category_id, channel)] = enabled
    settings_rows = {
        row[0]: row[1:]
        for row in UserSettings.objects.filter(in_chunk).values_list(
            "user_id",
            "paused_until",
            "timezone",
            "locale",
            "quiet_start",
            "quiet_end",
            "digest_hour",
            "digest_weekday",
        )
    }
    addresses: dict[int, dict[str, Address]] = {}
    devices: dict[int, dict[str, tuple[str, ...]]] = {}
    if kinds:
        # Primary first, then verified, then oldest: the first seen per kind wins.
        for user_id, kind, address, verified_at, _primary in (
            ContactPoint.objects.filter(in_chunk, kind__in=kinds)
            .order_by("user_id", "kind", "-is_primary", "verified_at", "pk")
            .values_list("user_id", "kind", "address", "verified_at", "is_primary")
        ):
            if kind in DEVICE_KINDS and verified_at is not None:  # a push goes to each
                per_kind = devices.setdefault(user_id, {})
                per_kind[kind] = (*per_kind.get(kind, ()), address)
            per_user = addresses.setdefault(user_id, {})
            current = per_user.get(kind)
            if current is None or (not current.verified and verified_at is not None):
                per_user[kind] = Address(address, verified_at is not None)
    user_email_counts = "email" in kinds and conf.get("USER_EMAIL_IS_CONTACT")
    users = list(users)
    suppressed = load_suppressed(
        kinds, in_chunk, users_filter(user_ids, "pk"), bool(user_email_counts)
    )
    result: dict[int, UserPrefs] = {}
    for user_id, is_active, email in users:
        if user_id not in wanted:
            continue
        user_addresses = addresses.get(user_id, {})
        if user_email_counts and email:
            current = user_addresses.get("email")
            # The account email serves until a contact point of the user's own
            # is verified (adding a new address must not stop email meanwhile).
            if current is None or not current.verified:
                user_addresses = {**user_addresses, "email": Address(email, True)}
        paused_until, tz, locale, quiet_start, quiet_end, digest_hour, digest_weekday = (
            settings_rows.get(user_id, NO_SETTINGS)
        )
        result[user_id] = UserPrefs(
            user_id=user_id,
            is_active=is_active,
            modes=modes.get(user_id, {}),
            channels=cells.get(user_id, {}),
            addresses=user_addresses,
            devices=devices.get(user_id, {}),
            suppressed=suppressed,
            paused_until=paused_until,
            timezone=tz,
            locale=locale,
            quiet_start=quiet_start,
            quiet_end=quiet_end,
            digest_hour=digest_hour,
            digest_weekday=digest_weekday,
        )
    return result


def load_suppressed(
    kinds: Sequence[str], in_chunk: Q, users_in_chunk: Q, account_emails: bool
) -> frozenset[tuple[str, str]]:
    """The active suppressions among a chunk's addresses, as ``(kind, lower-cased
    address)`` pairs (``decide`` compares lower-cased): one query, joining the
    suppression list to the chunk's contact points (and account emails) in the
    database rather than sending thousands of addresses as parameters."""
    if not kinds:
        return frozenset()
    contacts = (
        ContactPoint.objects.filter(in_chunk, kind__in=kinds)
        .annotate(a=Lower("address"))
        .values("a")
    )
    matches = Q(address__in=contacts)
    if account_emails:
        emails = (
            get_user_model()
            .objects.filter(users_in_chunk)
            .exclude(email="")
            .annotate(a=Lower("email"))
            .values("a")
        )
        matches |= Q(kind="email", address__in=emails)
    rows = Suppression.objects.filter(matches, lifted_at__isnull=True, kind__in=kinds).values_list(
        "kind", "address"
    )
    return frozenset((kind, address.lower()) for kind, address in rows)
