"""Demo data for the embedded default: users, categories, rules, a few events.

Idempotent: running it again changes nothing that exists.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from notify.intake.trigger import trigger
from notify.models import Category, ContactPoint
from rules.models import Rule

USERS = [
    # username, password, first name, staff
    ("admin", "notify-admin", "Ada", True),
    ("alice", "notify-alice", "Alice", False),
    ("bob", "notify-bob", "Bob", False),
    ("carol", "notify-carol", "Carol", False),
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
    ),
    dict(
        key="product-news",
        name="Product news",
        description="New features, now and then.",
        opt_in=True,
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


def load_demo(stdout=None) -> None:
    write = stdout.write if stdout else print
    User = get_user_model()
    users = {}
    for username, password, first_name, staff in USERS:
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
            user.set_password(password)
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
    write("Demo users (username / password):\n")
    for username, password, _, staff in USERS:
        write(f"  {username:<6} / {password}{'   (admin)' if staff else ''}\n")


def demo_logins() -> list[str]:
    """``username / password`` of each demo user that still has its demo
    password (none once they are changed, or on a database without the demo)."""
    users = get_user_model().objects.in_bulk([u[0] for u in USERS], field_name="username")
    return [
        f"{username} / {password}{' (staff)' if staff else ''}"
        for username, password, _, staff in USERS
        if username in users and users[username].check_password(password)
    ]
