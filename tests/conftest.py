"""Shared fixtures. Protocol peers (SMTP, HTTP providers) live in ``tests/peers``."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection

from notify.delivery.inflight import close_pools
from notify.models import Category
from rules.bindings import binding_index
from rules.index import rule_index
from rules.models import Rule
from tests.scaleout import machine_to_ourselves

pytest_plugins = [
    "tests.peers.smtp",
    "tests.peers.esp",
    "tests.peers.twilio",
    "tests.peers.slack",
    "tests.peers.webhooks",
    "tests.peers.robots",
    "tests.browser",
]


@pytest.fixture
def postgres():
    """Tests of worker fleets sharing one database (SKIP LOCKED claims, advisory
    locks): PostgreSQL only, with the machine's cores to themselves."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (claims and locks shared by processes)")
    with machine_to_ourselves():
        yield


@pytest.fixture(autouse=True, scope="session")
def _static_root():
    """What `notify run` does before serving: whitenoise warns when STATIC_ROOT is
    missing (importing the settings creates no folder)."""
    Path(django_settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)


@pytest.fixture(autouse=True)
def _notify_settings(settings, tmp_path):
    """Fresh sandbox dir per test; config changes visible at once; no eager mode."""
    settings.NOTIFY = {
        **settings.NOTIFY,
        "SANDBOX_DIR": str(tmp_path / "sandbox"),
        "CONFIG_CHECK_INTERVAL": 0,
        "EAGER": False,
    }
    # Tests create many users; the production hasher costs ~0.3 s per password.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Each test's transaction is rolled back, revisions included: a cached
    # index could outlive its rows under a revision number seen again.
    rule_index.clear()
    binding_index.clear()
    # Rate limits and throttles count in the cache; every test client is 127.0.0.1.
    cache.clear()
    yield
    close_pools()  # provider sessions this thread kept (notify.delivery.inflight)
    rule_index.clear()
    binding_index.clear()
    cache.clear()


@pytest.fixture(autouse=True)
def _pooled_connections_released(request):
    """After a test that grew this process's PostgreSQL pool (a live server's
    50 request threads, an in-process worker pool at its defaults), close the
    pool: idle, its connections would be held for the pool's ``max_idle`` per
    connection, and the other xdist worker's next big test (with its Celery
    workers) then found PostgreSQL's ``max_connections`` used up and failed
    with "couldn't get a connection after 10 sec" (CI, issue 14's pool)."""
    yield
    if "django_db_setup" not in request.fixturenames:
        return  # no test database yet: the pool would be built for the wrong name
    from django.db import connection

    pool = connection.pool if connection.vendor == "postgresql" else None
    if pool is None or connection.in_atomic_block:
        return
    if pool.get_stats().get("pool_size", 0) > RELEASE_POOL_ABOVE:
        connection.close()
        connection.close_pool()


# Connections a test process's pool may keep between tests (its min size is 2).
RELEASE_POOL_ABOVE = 4


@pytest.fixture
def make_user(db):
    User = get_user_model()
    counter = {"n": 0}

    def make(username: str | None = None, **fields):
        counter["n"] += 1
        username = username or f"user{counter['n']}"
        fields.setdefault("email", f"{username}@example.com")
        return User.objects.create_user(username=username, password="pw-" + username, **fields)

    return make


@pytest.fixture
def category(db):
    return Category.objects.create(key="orders", name="Orders", description="Order updates")


@pytest.fixture
def make_rule(db, category):
    def make(**fields):
        fields.setdefault("name", f"rule-{Rule.objects.count() + 1}")
        fields.setdefault("event_type", "order.shipped")
        fields.setdefault("category", category)
        fields.setdefault("recipients", ["explicit"])
        fields.setdefault("message", "order_shipped")
        fields.setdefault("channels", ["email", "inapp"])
        return Rule.objects.create(**fields)

    return make
