"""Demo data: only on the embedded default, random passwords shown once, and a
start-up check that refuses production while a published demo password works."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.management import CommandError, call_command
from django.db import OperationalError

import notify.checks
from notify.checks import KNOWN_DEMO_PASSWORDS, check_known_passwords, production_reasons
from notify.dev.demo import USERS, DemoRefused, load_demo
from notify.models import Event

SMTP = {"BACKEND": "django.core.mail.backends.smtp.EmailBackend", "OPTIONS": {}}
SANDBOX = {"BACKEND": "channels.sandbox.SandboxEmailBackend", "OPTIONS": {}}


@pytest.fixture
def embedded(settings):
    """The embedded default: SQLite and sandbox providers, DEBUG off."""
    settings.EMBEDDED = True
    settings.DEBUG = False
    settings.MAILERS = {"default": SANDBOX}
    return settings


@pytest.fixture
def postgres(embedded):
    """What README's "Running it for real" configures (the database is only named)."""
    embedded.EMBEDDED = False
    embedded.MAILERS = {"default": SMTP}
    return embedded


def demo(*args: str) -> str:
    out = StringIO()
    call_command("notify", "demo", *args, stdout=out)
    return out.getvalue()


def test_demo_passwords_are_random_valid_and_shown_once(embedded, db):
    first = demo()
    User = get_user_model()
    passwords = {}
    for username, _, _ in USERS:
        line = next(ln for ln in first.splitlines() if ln.strip().startswith(f"{username} "))
        passwords[username] = line.split("/")[1].split()[0]
        user = User.objects.get(username=username)
        assert user.check_password(passwords[username])
        assert passwords[username] != KNOWN_DEMO_PASSWORDS[username]
        assert passwords[username] not in user.password  # stored hashed
        validate_password(passwords[username], user)  # Django's four validators
    assert len(set(passwords.values())) == len(USERS)

    again = demo()
    assert "exist already" in again
    assert not any(password in again for password in passwords.values())
    assert User.objects.count() == len(USERS)


def test_another_database_gets_other_passwords(embedded, db):
    first = load_demo(StringIO())
    get_user_model().objects.all().delete()
    second = load_demo(StringIO())
    assert set(first) == set(second) == {username for username, _, _ in USERS}
    assert all(first[name] != second[name] for name in first)


def test_demo_refuses_another_database_and_names_the_flag(postgres, db):
    with pytest.raises(CommandError) as refused:
        demo()
    message = str(refused.value)
    assert "DATABASE_URL" in message and "--force" in message
    assert "real providers" in message and "email" in message
    assert not get_user_model().objects.exists()
    assert not Event.objects.exists()  # nothing sent, nothing queued


def test_demo_refuses_a_real_mailer_even_on_sqlite(embedded, db):
    embedded.MAILERS = {"default": SMTP}
    with pytest.raises(DemoRefused, match="real providers"):
        load_demo(StringIO())
    assert not get_user_model().objects.exists()


def test_make_run_skips_the_demo_outside_the_embedded_default(postgres, db):
    out = demo("--if-embedded")
    assert out.startswith("No demo data:") and "DATABASE_URL" in out
    assert not get_user_model().objects.exists()
    assert not Event.objects.exists()


def test_force_loads_it_anyway(postgres, db):
    out = demo("--force")
    assert "admin" in out
    assert get_user_model().objects.filter(username="admin", is_superuser=True).exists()


# -- the start-up check -------------------------------------------------------------


def test_production_is_refused_while_a_published_password_works(postgres, make_user):
    admin = make_user("admin", is_staff=True, is_superuser=True)
    admin.set_password("notify-admin")
    admin.save()
    assert production_reasons()
    [error] = check_known_passwords()
    assert error.id == "notify.E020" and "admin" in error.msg
    assert "changepassword" in error.hint

    admin.set_password("a-new-and-private-passphrase")
    admin.save()
    assert check_known_passwords() == []


def test_a_real_provider_is_production_too(embedded, make_user):
    alice = make_user("alice")
    alice.set_password("notify-alice")
    alice.save()
    assert check_known_passwords() == []  # the embedded default: a demo is fine
    embedded.MAILERS = {"default": SMTP}
    [error] = check_known_passwords()
    assert "alice" in error.msg and "real providers" in error.msg


def test_debug_is_not_production(postgres, make_user):
    postgres.DEBUG = True
    user = make_user("bob")
    user.set_password("notify-bob")
    user.save()
    assert check_known_passwords() == []


def test_the_check_says_nothing_when_the_database_cannot_answer(postgres, monkeypatch):
    def unreachable():
        raise OperationalError("could not connect")

    monkeypatch.setattr(notify.checks, "users_with_known_passwords", unreachable)
    assert check_known_passwords() == []


def test_make_run_asks_for_the_demo_only_on_the_embedded_default():
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    run = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "notify demo --if-embedded" in run
