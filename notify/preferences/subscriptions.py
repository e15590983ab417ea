"""Following things: ``notify.subscribe(user, order)`` / ``notify.subscribe(user, "releases")``.

A subscription's target is the same string an event's ``object_ref`` holds
(``"app_label.model:pk"``, as signal events and bindings write it) or
``"topic:<name>"``. Rules reach subscribers with the recipient specs
``followers`` (of the event's object) and ``topic:<name>``; the rule's
"exclude actor" leaves out the person who caused the event.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction

from notify.models import Subscription
from rules.recipients import TOPIC_NAME

TOPIC_PREFIX = "topic:"


def target_for(thing: Any) -> str:
    """``"app_label.model:pk"`` for a saved model instance, ``"topic:<name>"``
    for a topic name (with or without the ``topic:`` prefix)."""
    if isinstance(thing, models.Model):
        if thing.pk is None:
            raise ValidationError("save the object before following it")
        target = f"{thing._meta.label_lower}:{thing.pk}"
    elif isinstance(thing, str):
        name = thing.removeprefix(TOPIC_PREFIX)
        if not TOPIC_NAME.match(name):
            raise ValidationError(
                f"'{name}' is not a topic name: letters, digits, '.', '_' and '-'"
            )
        target = TOPIC_PREFIX + name
    else:
        raise ValidationError(f"follow a saved model instance or a topic name, not {thing!r}")
    if len(target) > Subscription._meta.get_field("target").max_length:
        raise ValidationError("the reference is too long to follow")
    return target


def _user_id(user: Any) -> int:
    user_id = user.pk if isinstance(user, models.Model) else user
    if isinstance(user_id, bool) or not isinstance(user_id, int):
        raise ValidationError(f"user must be a user or a user id, not {user!r}")
    return user_id


def subscribe(user: Any, thing: Any) -> bool:
    """Follow ``thing``; True if the subscription is new (idempotent)."""
    target, user_id = target_for(thing), _user_id(user)
    try:
        with transaction.atomic():
            _, created = Subscription.objects.get_or_create(user_id=user_id, target=target)
    except IntegrityError:  # a concurrent subscribe won
        return False
    return created


def unsubscribe(user: Any, thing: Any) -> bool:
    """Stop following ``thing``; True if there was a subscription."""
    deleted, _ = Subscription.objects.filter(
        user_id=_user_id(user), target=target_for(thing)
    ).delete()
    return bool(deleted)


def is_subscribed(user: Any, thing: Any) -> bool:
    return Subscription.objects.filter(user_id=_user_id(user), target=target_for(thing)).exists()
