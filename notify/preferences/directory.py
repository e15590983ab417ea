"""The database edge of fan-out and dispatch: users, preferences, addresses.

Each loader takes a chunk of user ids and issues a fixed number of queries,
whatever the chunk's size, so fan-out's query count grows with chunks only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Q

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
        """A page of the group's active members, ascending. Read from the
        membership table and ordered by its own user column, so that a page is
        one range of ``notify_group_members_idx`` (group, user) (migration
        0012); ordered by the user's id, every page sorted all the group's
        remaining members. Membership is unique per user: no DISTINCT needed."""
        memberships = get_user_model().groups.through.objects
        return list(
            memberships.filter(group__name=group, user_id__gt=after, user__is_active=True)
            .order_by("user_id")
            .values_list("user_id", flat=True)[:limit]
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
NO_MODES: dict[int, str] = {}
NO_CELLS: dict[tuple[int, str], bool] = {}
NO_DEVICES: dict[str, tuple[str, ...]] = {}
NO_ADDRESSES: dict[str, Address] = {}


def load_preferences(
    user_ids: Sequence[int], category_ids: Iterable[int], address_kinds: Iterable[str]
) -> dict[int, UserPrefs]:
    """Everything ``decide`` needs for these users, in four queries whatever
    their number: users joined to their settings and category modes (one row
    per user and mode), channel cells, contact points, suppressions. Rows come
    as plain tuples; a user with no rows of their own shares the empty maps."""
    category_ids = list(set(category_ids))
    kinds = sorted(set(address_kinds))
    wanted = set(user_ids)
    cells: dict[int, dict[tuple[int, str], bool]] = {}
    for user_id, category_id, channel, enabled in channel_cells(user_ids, category_ids):
        cells.setdefault(user_id, {})[(category_id, channel)] = bool(enabled)
    addresses: dict[int, dict[str, Address]] = {}
    devices: dict[int, dict[str, tuple[str, ...]]] = {}
    # Primary first, then verified, then oldest: the first seen per kind wins.
    for user_id, kind, address, verified_at in contact_rows(user_ids, kinds):
        if kind in DEVICE_KINDS and verified_at is not None:  # a push goes to each
            per_kind = devices.setdefault(user_id, {})
            per_kind[kind] = (*per_kind.get(kind, ()), address)
        per_user = addresses.setdefault(user_id, {})
        current = per_user.get(kind)
        if current is None or (not current.verified and verified_at is not None):
            per_user[kind] = Address(address, verified_at is not None)
    user_email_counts = "email" in kinds and conf.get("USER_EMAIL_IS_CONTACT")
    suppressed = load_suppressed(kinds, user_ids, bool(user_email_counts))
    # One pass over the joined rows (one per user and mode): the hot loop of
    # fan-out's reads, so UserPrefs is built positionally (field order) and a
    # user's first row builds it; a further row only adds a category's mode.
    result: dict[int, UserPrefs] = {}
    for row in joined_user_rows(user_ids, category_ids):
        user_id = row[0]
        if user_id not in wanted:
            continue
        prefs = result.get(user_id)
        if prefs is not None:
            if row[11] is not None:
                prefs.modes = {**prefs.modes, row[11]: row[12]}
            continue
        email = row[2]
        user_addresses = addresses.get(user_id, NO_ADDRESSES)
        if user_email_counts and email:
            current = user_addresses.get("email")
            # The account email serves until a contact point of the user's own
            # is verified (adding a new address must not stop email meanwhile).
            if current is None or not current.verified:
                user_addresses = {**user_addresses, "email": Address(email, True)}
        result[user_id] = UserPrefs(
            user_id,
            bool(row[1]),
            NO_MODES if row[11] is None else {row[11]: row[12]},
            cells.get(user_id, NO_CELLS),
            user_addresses,
            devices.get(user_id, NO_DEVICES),
            suppressed,
            *(NO_SETTINGS if row[3] is None else row[4:11]),
        )
    return result


def joined_user_rows(user_ids: Sequence[int], category_ids: Sequence[int]) -> list[tuple]:
    """One query for a chunk: each user with their settings (a missing row
    reads as NULLs) and their mode for each wanted category (one row per user
    and mode; a user without one keeps a row of NULLs).

    Plain SQL on a cursor rather than the ORM: the ORM runs a converter per
    column of every row (a boolean, two times, a datetime: most of them NULL),
    which cost more than the query. Here the few non-NULL values of the columns
    that need one are converted, with the backend's own converters."""
    User = get_user_model()
    ops = connection.ops
    q = ops.quote_name
    user_pk = q(User._meta.pk.column)
    settings = UserSettings._meta
    modes = CategoryPreference._meta
    ids = sorted(user_ids)
    if not ids:
        return []
    if ids[-1] - ids[0] < 2 * len(ids):  # dense: a range (see ``users_filter``)
        where, params = f"u.{user_pk} BETWEEN %s AND %s", [ids[0], ids[-1]]
    else:
        where, params = f"u.{user_pk} IN ({', '.join(['%s'] * len(ids))})", list(ids)
    mode_join = "1 = 0"
    if category_ids:
        mode_join = f"m.category_id IN ({', '.join(str(int(c)) for c in category_ids)})"
    columns = [
        (User, "is_active"),
        (User, "email"),
        (UserSettings, "user"),
        *((UserSettings, name) for name in SETTINGS_FIELDS),
        (CategoryPreference, "category"),
        (CategoryPreference, "mode"),
    ]
    alias = {User: "u", UserSettings: "s", CategoryPreference: "m"}
    select = ", ".join(
        f"{alias[model]}.{q(model._meta.get_field(name).column)}" for model, name in columns
    )
    sql = (
        f"SELECT u.{user_pk}, {select} FROM {q(User._meta.db_table)} u "
        f"LEFT JOIN {q(settings.db_table)} s ON s.{q(settings.get_field('user').column)} = u.{user_pk} "
        f"LEFT JOIN {q(modes.db_table)} m ON m.{q(modes.get_field('user').column)} = u.{user_pk} "
        f"AND {mode_join} WHERE {where}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    # Booleans are read with bool() where used; of the others only the
    # settings' times and datetimes have converters (and only on SQLite).
    convert = [
        (position + 1, converters_of(model, name))
        for position, (model, name) in enumerate(columns)
        if model is UserSettings
    ]
    convert = [(position, fns) for position, fns in convert if fns]
    if not convert:
        return rows
    out = []
    for row in rows:
        values = None
        for position, fns in convert:
            value = row[position]
            if value is None:
                continue
            for fn, field in fns:
                value = fn(value, field, connection)
            if value is not row[position]:
                values = values or list(row)
                values[position] = value
        out.append(row if values is None else tuple(values))
    return out


# UserSettings columns read for ``UserPrefs``, in ``NO_SETTINGS`` order.
SETTINGS_FIELDS = (
    "paused_until",
    "timezone",
    "locale",
    "quiet_start",
    "quiet_end",
    "digest_hour",
    "digest_weekday",
)


def converters_of(model, name: str) -> list:
    """The backend's converters for a column read raw (SQLite: booleans,
    datetimes and times arrive as ints and text; PostgreSQL: none)."""
    field = model._meta.get_field(name)
    col = field.get_col(model._meta.db_table)
    fns = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
    return [(fn, col) for fn in fns]


def user_clause(user_ids: Sequence[int], column: str) -> tuple[str, list[int]]:
    """``users_filter`` as SQL: a range for a dense chunk, else an ``IN`` list."""
    ids = sorted(user_ids)
    if not ids:
        return "1 = 0", []
    if ids[-1] - ids[0] < 2 * len(ids):
        return f"{column} BETWEEN %s AND %s", [ids[0], ids[-1]]
    return f"{column} IN ({', '.join(['%s'] * len(ids))})", ids


def _in(values: Sequence[object]) -> str:
    return ", ".join(["%s"] * len(values))


def _rows(sql: str, params: Sequence[object]) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


# The loaders below are plain SQL on a cursor, as ``joined_user_rows``: a
# dispatch batch is ten deliveries, and compiling these querysets through the
# ORM (subqueries, ``Lower``, ``Q`` ranges) cost more than running them.


def channel_cells(user_ids: Sequence[int], category_ids: Sequence[int]) -> list[tuple]:
    """(user, category, channel, enabled) of the chunk's channel cells."""
    if not category_ids:
        return []
    q = connection.ops.quote_name
    where, params = user_clause(user_ids, "user_id")
    return _rows(
        f"SELECT user_id, category_id, channel, enabled "
        f"FROM {q(ChannelPreference._meta.db_table)} "
        f"WHERE {where} AND category_id IN ({_in(category_ids)})",
        [*params, *category_ids],
    )


def contact_rows(user_ids: Sequence[int], kinds: Sequence[str]) -> list[tuple]:
    """(user, kind, address, verified_at) of the chunk's contact points of
    ``kinds``: per user and kind, primary first, then by verification time, then oldest
    (only ``verified_at``'s being NULL or not is read: no converter needed)."""
    if not kinds:
        return []
    q = connection.ops.quote_name
    where, params = user_clause(user_ids, "user_id")
    return _rows(
        f"SELECT user_id, kind, address, verified_at FROM {q(ContactPoint._meta.db_table)} "
        f"WHERE {where} AND kind IN ({_in(kinds)}) "
        "ORDER BY user_id ASC, kind ASC, is_primary DESC, verified_at ASC, id ASC",
        [*params, *kinds],
    )


def load_suppressed(
    kinds: Sequence[str], user_ids: Sequence[int], account_emails: bool
) -> frozenset[tuple[str, str]]:
    """The active suppressions among a chunk's addresses, as ``(kind, lower-cased
    address)`` pairs (``decide`` compares lower-cased): one query, joining the
    suppression list to the chunk's contact points (and account emails) in the
    database rather than sending thousands of addresses as parameters."""
    if not kinds:
        return frozenset()
    q = connection.ops.quote_name
    User = get_user_model()
    contacts_where, contacts_params = user_clause(user_ids, "c.user_id")
    matches = (
        f"s.address IN (SELECT LOWER(c.address) FROM {q(ContactPoint._meta.db_table)} c "
        f"WHERE {contacts_where} AND c.kind IN ({_in(kinds)}))"
    )
    params: list[object] = [*contacts_params, *kinds]
    if account_emails:
        email = q(User._meta.get_field("email").column)
        users_where, users_params = user_clause(user_ids, f"u.{q(User._meta.pk.column)}")
        matches += (
            f" OR (s.kind = %s AND s.address IN (SELECT LOWER(u.{email}) "
            f"FROM {q(User._meta.db_table)} u WHERE {users_where} AND u.{email} <> ''))"
        )
        params += ["email", *users_params]
    rows = _rows(
        f"SELECT s.kind, s.address FROM {q(Suppression._meta.db_table)} s "
        f"WHERE ({matches}) AND s.lifted_at IS NULL AND s.kind IN ({_in(kinds)})",
        [*params, *kinds],
    )
    return frozenset((kind, address.lower()) for kind, address in rows)
