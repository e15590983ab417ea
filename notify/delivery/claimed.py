"""Loading a claimed batch: one SQL statement, the ORM's instances.

``deliver`` needs each claimed delivery with its notification, event, actor,
rule, recipient and category: what ``select_related`` over those six
relations gives. A batch is ten deliveries (``WORKER_BATCH_SIZE``), and
compiling that seven-table queryset cost a worker more than running it and
building the rows' instances together (about 0.3 ms a delivery on a quiet
machine, three times that under load). So the statement is written here once
per process (``_statement``: the same joins, columns and order), its values
go through the backend's and the fields' converters as the ORM's would, and
the instances are made with ``Model.from_db`` and linked through the same
relation caches ``select_related`` fills. A user model that spans tables
(multi-table inheritance) takes the ORM's path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, NamedTuple

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Model

from notify.models import Category, Delivery, Event, Notification
from notify.models.status import Status
from notify.outbox.rows import SEND_ORDER
from rules.models import Rule

RELATED = (
    "notification__event__actor",
    "notification__rule",
    "notification__user",
    "notification__category",
)


class Table(NamedTuple):
    """One model of the statement: its alias, where its columns start, and
    the relation (on the instance of table ``parent``) it is cached under."""

    model: type[Model]
    alias: str
    parent: int | None  # index in the table list
    relation: str  # the foreign key's name on the parent's model ("" for the root)
    start: int
    pk: int  # the primary key's place among the model's columns
    # (place in the row, the backend's and the field's converters, the column)
    converters: tuple[tuple[int, tuple[Callable[..., Any], ...], Any], ...]


def load_claimed(ids: Iterable[int], token: datetime) -> list[Delivery]:
    """The deliveries among ``ids`` still claimed with ``token``, in send order,
    their relations loaded (as ``select_related(*RELATED)`` would)."""
    ids = [int(i) for i in ids]
    if not ids:
        return []
    if get_user_model()._meta.parents:
        return list(
            Delivery.objects.filter(pk__in=ids, status=Status.SENDING, claimed_until=token)
            .select_related(*RELATED)
            .order_by(*SEND_ORDER)
        )
    sql, tables = _statement(connection.alias, connection.vendor, len(ids))
    with connection.cursor() as cursor:
        cursor.execute(sql, [*ids, Status.SENDING, connection.ops.adapt_datetimefield_value(token)])
        rows = cursor.fetchall()
    db = connection.alias
    out = []
    for row in rows:
        values = list(row)
        made: list[Model | None] = []
        for table in tables:
            for position, fns, expression in table.converters:
                value = values[position]
                for fn in fns:
                    value = fn(value, expression, connection)
                values[position] = value
            end = table.start + len(table.model._meta.concrete_fields)
            columns = values[table.start : end]
            instance = None
            if columns[table.pk] is not None:  # a LEFT JOIN that found nothing: None
                instance = table.model.from_db(db, None, columns)  # type: ignore[arg-type]
            made.append(instance)
            if table.parent is not None and made[table.parent] is not None:
                parent = made[table.parent]
                parent._meta.get_field(table.relation).set_cached_value(parent, instance)
        out.append(made[0])
    return out  # type: ignore[return-value]


@functools.lru_cache(maxsize=64)
def _statement(alias: str, vendor: str, count: int) -> tuple[str, list[Table]]:
    """The SELECT for ``count`` ids on this database, and its tables (a batch
    is up to ``WORKER_BATCH_SIZE`` ids: a handful of statements a process)."""
    User = get_user_model()
    q = connection.ops.quote_name
    # (model, parent index, foreign key on the parent, LEFT JOIN)
    plan: list[tuple[type[Model], int | None, str, bool]] = [
        (Delivery, None, "", False),
        (Notification, 0, "notification", False),
        (Event, 1, "event", False),
        (User, 2, "actor", True),
        (Rule, 1, "rule", True),
        (User, 1, "user", False),
        (Category, 1, "category", False),
    ]
    tables: list[Table] = []
    columns: list[str] = []
    joins: list[str] = []
    for index, (model, parent, relation, outer) in enumerate(plan):
        alias = f"t{index}"
        fields = model._meta.concrete_fields
        converters = []
        for offset, field in enumerate(fields):
            expression = field.get_col(alias)
            fns = connection.ops.get_db_converters(expression) + expression.get_db_converters(
                connection
            )
            if fns:
                converters.append((len(columns) + offset, tuple(fns), expression))
        pk_at = list(fields).index(model._meta.pk)
        tables.append(Table(model, alias, parent, relation, len(columns), pk_at, tuple(converters)))
        columns += [f"{alias}.{q(field.column)}" for field in fields]
        if parent is None:
            joins.append(f"{q(model._meta.db_table)} {alias}")
            continue
        key = plan[parent][0]._meta.get_field(relation)
        joins.append(
            f"{'LEFT OUTER' if outer else 'INNER'} JOIN {q(model._meta.db_table)} {alias} "
            f"ON {alias}.{q(key.target_field.column)} = t{parent}.{q(key.column)}"
        )
    root = Delivery._meta
    status = q(root.get_field("status").column)
    claimed = q(root.get_field("claimed_until").column)
    pk = q(root.pk.column)
    order = ", ".join(
        f"t0.{q(root.pk.column if name == 'pk' else root.get_field(name).column)}"
        for name in SEND_ORDER
    )
    sql = (
        f"SELECT {', '.join(columns)} FROM {' '.join(joins)} "
        f"WHERE t0.{pk} IN ({', '.join(['%s'] * count)}) "
        f"AND t0.{status} = %s AND t0.{claimed} = %s ORDER BY {order}"
    )
    return sql, tables
