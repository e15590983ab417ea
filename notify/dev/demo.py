"""Demo data for the embedded default: users, categories, rules, a few events.

Idempotent: running it again changes nothing that exists.

Only for the embedded default (SQLite, sandbox providers): ``demo_refusal``
says why anything else is refused, unless the operator asks for it
(``notify demo --force``). Each demo user gets a random password when it is
created, stored hashed like any other and printed that once; nothing
published in this repository signs anyone in (``notify.checks`` refuses
production while a user still has one of the old published passwords).
"""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError

from notify.checks import embedded_database, real_providers
from notify.intake.trigger import trigger
from notify.models import Category, ContactPoint
from rules.models import Rule

USERS = [
    # username, first name, staff
    ("admin", "Ada", True),
    ("alice", "Alice", False),
    ("bob", "Bob", False),
    ("carol", "Carol", False),
]

CATEGORIES = [
    dict(key="orders", name="Orders", description="Your orders: shipped, delivered, refunded."),
    dict(key="comments", name="Comments", description="Replies and comments on what you follow."),
    dict(
        key="security",
        name="Security",
        description="Sign-ins and changes to your account.",
        critical=True,
        critical_reason="We must tell you about activity on your account.",
        default_channels=["email", "inapp"],
    ),
    dict(
        key="product-news",
        name="Product news",
        description="New features, now and then.",
        opt_in=True,
        default_channels=["email", "inapp"],
    ),
]

RULES = [
    dict(
        name="Order shipped",
        event_type="order.shipped",
        condition="",
        category="orders",
        recipients=["payload:customer_id"],
        message="order_shipped",
    ),
    dict(
        name="Comment on a followed thread",
        event_type="comment.posted",
        condition="payload.comment | length > 0",
        category="comments",
        recipients=["payload:watchers", "group:Support"],
        message="comment_posted",
    ),
]


class DemoRefused(Exception):
    """Demo data was asked for outside the embedded default."""


def demo_refusal() -> str:
    """Why demo data must not be loaded here ("" on the embedded default)."""
    reasons = []
    if not embedded_database():
        reasons.append("DATABASE_URL points at a database that is not the embedded SQLite one")
    providers = real_providers()
    if providers:
        reasons.append(
            f"real providers are configured ({', '.join(providers)}): the demo events "
            "would send real messages"
        )
    if not reasons:
        return ""
    return (
        "notify demo loads users (an admin among them) and sends demo events; it is for "
        f"the embedded default only, and here {' and '.join(reasons)}. Unset DATABASE_URL "
        "(and the provider settings) for a local demo, or pass --force to load it anyway."
    )


def random_password(user) -> str:
    """A password Django's validators accept (AUTH_PASSWORD_VALIDATORS)."""
    while True:
        password = secrets.token_urlsafe(12)
        try:
            validate_password(password, user)
        except ValidationError:  # pragma: no cover - 16 random characters pass
            continue
        return password


def load_demo(stdout=None, *, force: bool = False) -> dict[str, str]:
    """Load the demo data; returns the passwords of the users it created.
    Raises ``DemoRefused`` outside the embedded default unless ``force``."""
    refusal = demo_refusal()
    if refusal and not force:
        raise DemoRefused(refusal)
    write = stdout.write if stdout else print
    User = get_user_model()
    users = {}
    passwords = {}
    for username, first_name, staff in USERS:
        user, created = User.objects.get_or_create(
            username=username,
            defaults={
                "email": f"{username}@example.com",
                "first_name": first_name,
                "is_staff": staff,
                "is_superuser": staff,
            },
        )
        if created:
            passwords[username] = random_password(user)
            user.set_password(passwords[username])
            user.save(update_fields=["password"])
        users[username] = user
    support, _ = Group.objects.get_or_create(name="Support")
    support.user_set.add(users["admin"])
    ContactPoint.objects.get_or_create(
        user=users["carol"], kind=ContactPoint.Kind.PHONE, address="+15005550006"
    )
    categories = {}
    for data in CATEGORIES:
        categories[data["key"]], _ = Category.objects.get_or_create(key=data["key"], defaults=data)
    new_rules = 0
    for data in RULES:
        _, created = Rule.objects.get_or_create(
            name=data["name"], defaults={**data, "category": categories[data["category"]]}
        )
        new_rules += created
    if new_rules:
        trigger(
            "order.shipped",
            {"order_id": "A-1001", "carrier": "DHL", "customer_id": users["alice"].pk},
            idempotency_key="demo-order-A-1001",
        )
        trigger(
            "comment.posted",
            {
                "title": "Launch plan",
                "comment": "Looks good to me!",
                "watchers": [users["alice"].pk, users["bob"].pk],
            },
            actor=users["carol"],
            idempotency_key="demo-comment-1",
        )
    if passwords:
        write("Demo users (username / password), shown this once:\n")
        for username, _, staff in USERS:
            if username in passwords:
                admin = "   (admin)" if staff else ""
                write(f"  {username:<6} / {passwords[username]}{admin}\n")
    else:
        write(
            "Demo users exist already; their passwords were shown when they were created "
            "(set one with `manage.py changepassword alice`).\n"
        )
    return passwords


def demo_logins() -> list[str]:
    """The demo users that exist, for the banner ``notify run`` prints. Their
    passwords are random and shown once, by ``notify demo``; never here."""
    users = set(
        get_user_model()
        .objects.filter(username__in=[u[0] for u in USERS])
        .values_list("username", flat=True)
    )
    return [f"{name}{' (staff)' if staff else ''}" for name, _, staff in USERS if name in users]
