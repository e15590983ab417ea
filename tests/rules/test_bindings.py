"""Signal bindings: saves and deletes become events, configured in admin,
followed by every running process without a restart; secrets never bound."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.urls import reverse

from notify.models import Event
from rules.forms import SignalBindingForm
from rules.models import AuditEntry, SignalBinding

User = get_user_model()
ROOT = Path(__file__).resolve().parents[2]


def bind(model, signal, event_type, **fields) -> SignalBinding:
    binding = SignalBinding(
        content_type=ContentType.objects.get_for_model(model),
        signal=signal,
        event_type=event_type,
        **fields,
    )
    binding.full_clean()
    binding.save()
    return binding


def events(event_type: str) -> list[Event]:
    return list(Event.objects.filter(type=event_type).order_by("pk"))


def add_url() -> str:
    return reverse("admin:rules_signalbinding_add")


def binding_post(**overrides) -> dict:
    data = {
        "content_type": ContentType.objects.get_for_model(Group).pk,
        "signal": "created",
        "event_type": "group.created",
        "payload_fields": ["name"],
        "actor_field": "",
        "description": "",
        "is_active": "on",
        "_save": "Save",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


# -- configuring ---------------------------------------------------------------------------------


def test_a_binding_saved_in_admin_makes_saves_into_events(admin_client):
    Group.objects.create(name="before")  # builds this process's (empty) binding index
    response = admin_client.post(add_url(), binding_post(), follow=True)
    assert response.status_code == 200
    assert SignalBinding.objects.filter(event_type="group.created").exists()
    with transaction.atomic():
        group = Group.objects.create(name="Support")
    [event] = events("group.created")
    assert event.payload == {"model": "auth.group", "pk": group.pk, "object": {"name": "Support"}}
    assert event.source == "signal" and event.object_ref == f"auth.group:{group.pk}"
    # The change is on the audit log, with who made it.
    entry = AuditEntry.objects.get(kind="binding")
    assert entry.actor_name == "admin" and entry.action == "created" and entry.source == "admin"


def test_a_password_field_cannot_be_bound(admin_client):
    user_type = ContentType.objects.get_for_model(User)
    page = admin_client.get(add_url() + f"?content_type={user_type.pk}")
    assert page.status_code == 200
    response = admin_client.post(
        add_url(),
        binding_post(
            content_type=user_type.pk,
            event_type="user.created",
            payload_fields=["username", "password"],
        ),
    )
    assert response.status_code == 200  # the form again, with the error
    assert "holds a secret" in response.content.decode()
    assert not SignalBinding.objects.exists()
    # The form alone, and the model's clean() for code and imports.
    form = SignalBindingForm(
        data={
            "content_type": user_type.pk,
            "signal": "created",
            "event_type": "user.created",
            "payload_fields": ["password"],
            "is_active": True,
        }
    )
    assert not form.is_valid()
    assert "holds a secret" in str(form.errors["payload_fields"])
    for name in ("password", "last_login_token", "api_key"):
        binding = SignalBinding(
            content_type=user_type,
            signal="created",
            event_type="user.created",
            payload_fields=[name],
        )
        with pytest.raises(ValidationError) as caught:
            binding.full_clean()
        assert "payload_fields" in caught.value.message_dict


def test_the_binding_form_shows_secrets_but_cannot_tick_them(admin_client):
    user_type = ContentType.objects.get_for_model(User)
    binding = bind(User, "created", "user.created", payload_fields=["username"])
    content = admin_client.get(
        reverse("admin:rules_signalbinding_change", args=[binding.pk])
    ).content.decode()
    assert 'value="password"' in content and "password (secret)" in content
    assert str(user_type.pk) in content  # the field map for the page's script


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"event_type": "Not A Type"}, "is not an event type"),
        ({"payload_fields": ["nope"]}, "has no field 'nope'"),
        ({"changed_fields": ["name"]}, "only 'updated'"),
        ({"actor_field": "name"}, "pointing at a user"),
        ({"signal": "m2m_changed", "changed_fields": ["name"]}, "no many-to-many field"),
    ],
)
def test_binding_mistakes_are_named(db, fields, message):
    binding = SignalBinding(
        content_type=ContentType.objects.get_for_model(Group),
        signal=fields.pop("signal", "created"),
        event_type=fields.pop("event_type", "group.created"),
        **fields,
    )
    with pytest.raises(ValidationError, match=message):
        binding.full_clean()


# -- what the events say ---------------------------------------------------------------------------


def test_updates_say_what_changed_and_can_wait_for_a_field(db, make_user):
    staff = make_user("staff")
    bind(User, "updated", "user.updated", payload_fields=["username", "email", "is_active"])
    bind(
        User,
        "updated",
        "user.deactivated",
        payload_fields=["username"],
        changed_fields=["is_active"],
        actor_field="pk",
    )
    bind(User, "updated", "user.password_changed", changed_fields=["password"])
    staff.email = "new@example.com"
    staff.save()
    [update] = events("user.updated")
    assert update.payload["changed"] == ["email"]
    assert update.payload["changes"] == {
        "email": {"old": "staff@example.com", "new": "new@example.com"}
    }
    assert update.payload["object"] == {
        "username": "staff",
        "email": "new@example.com",
        "is_active": True,
    }
    assert events("user.deactivated") == []  # is_active did not change
    staff.is_active = False
    staff.save(update_fields=["is_active"])
    [deactivated] = events("user.deactivated")
    assert deactivated.payload["changes"] == {}  # is_active changed, but is not in the payload
    assert deactivated.payload["changed"] == ["is_active"]
    assert deactivated.actor_id == staff.pk
    staff.set_password("another")
    staff.save()
    [changed] = events("user.password_changed")
    # The name of the field, never its value.
    assert changed.payload["changed"] == ["password"] and changed.payload["object"] == {}
    assert "pbkdf2" not in str(changed.payload) and "md5" not in str(changed.payload)


def test_deletes_are_snapshotted_before_the_row_is_gone(db):
    bind(Group, "deleted", "group.deleted", payload_fields=["name"])
    group = Group.objects.create(name="Temp")
    pk = group.pk
    group.delete()
    [event] = events("group.deleted")
    assert event.payload == {"model": "auth.group", "pk": pk, "object": {"name": "Temp"}}
    assert event.object_ref == f"auth.group:{pk}"


def test_m2m_changes_from_either_side(db, make_user):
    bind(
        User,
        "m2m_changed",
        "user.groups_changed",
        payload_fields=["username"],
        changed_fields=["groups"],
    )
    alice = make_user("alice")
    staff, ops = Group.objects.create(name="Staffers"), Group.objects.create(name="Night shift")
    alice.groups.add(staff, ops)
    alice.groups.remove(ops)
    alice.groups.clear()
    staff.user_set.add(alice)  # the other side
    found = [
        (e.payload["m2m"]["action"], e.payload["m2m"]["pks"]) for e in events("user.groups_changed")
    ]
    assert found == [
        ("add", sorted([staff.pk, ops.pk])),
        ("remove", [ops.pk]),
        ("clear", [staff.pk]),
        ("add", [staff.pk]),
    ]


def test_a_rolled_back_change_stores_no_event_and_bulk_updates_make_none(db):
    bind(Group, "created", "group.created", payload_fields=["name"])
    bind(Group, "updated", "group.updated", payload_fields=["name"])
    with pytest.raises(RuntimeError), transaction.atomic():
        Group.objects.create(name="doomed")
        raise RuntimeError
    assert events("group.created") == []
    Group.objects.create(name="kept")
    Group.objects.filter(name="kept").update(name="renamed in bulk")  # no signal: no event
    Group.objects.bulk_create([Group(name="bulk")])
    assert [e.payload["object"]["name"] for e in events("group.created")] == ["kept"]
    assert events("group.updated") == []


def test_an_inactive_binding_makes_no_events(db):
    binding = bind(Group, "created", "group.created", payload_fields=["name"])
    binding.is_active = False
    binding.save()
    Group.objects.create(name="quiet")
    assert events("group.created") == []


# -- another process, no restart --------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, sys, time
    import django

    django.setup()
    from django.contrib.auth.models import Group
    from rules.bindings import binding_index

    Group.objects.create(name="before")  # no binding yet; the index is built here
    assert binding_index.get().by_model == {}
    print("ready", flush=True)
    sys.stdin.readline()  # the test creates the binding in admin meanwhile
    time.sleep(1.1)  # the next configuration check (CONFIG_CHECK_INTERVAL, 1 s by default)
    Group.objects.create(name="after")
    print("saved", flush=True)
    """
)


def database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgres://{s['USER']}{password}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_a_binding_created_in_admin_reaches_another_running_process(admin_client):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "notify.project.settings",
        "DATABASE_URL": database_url(),
        "NOTIFY_EAGER": "0",
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        response = admin_client.post(add_url(), binding_post(), follow=True)
        assert response.status_code == 200
        assert SignalBinding.objects.filter(event_type="group.created").exists()
        child.stdin.write("go\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert out.strip() == "saved"
    names = [e.payload["object"]["name"] for e in events("group.created")]
    assert names == ["after"]  # made by the other process, after the binding was saved
    event = events("group.created")[0]
    after = Group.objects.get(name="after")
    assert event.object_ref == f"auth.group:{after.pk}" and event.source == "signal"
