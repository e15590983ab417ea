"""The audit log (who, when, before and after), restoring a rule to an earlier
version, and the "ops" group that edits configuration and nothing else."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from notify.models import Category, MessageTemplate
from rules.audit import acting, restore
from rules.models import AuditEntry, Rule
from rules.ops import OPS_GROUP, ensure_ops_group


def rule_post(category, **overrides) -> dict:
    data = {
        "name": "big orders",
        "description": "",
        "is_active": "on",
        "priority": "0",
        "event_type": "order.shipped",
        "condition": "payload.total > 100",
        "category": str(category.pk),
        "message": "order_shipped",
        "recipients": "explicit",
        "channels": ["email"],
        "exclude_actor": "on",
        "fallback": "{}",
        "active_timezone": "UTC",
        "_save": "Save",
        # The workflow steps' inline formset, empty (what the browser posts).
        "steps-TOTAL_FORMS": "0",
        "steps-INITIAL_FORMS": "0",
    }
    data.update(overrides)
    return data


def entries(**filters) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(**filters).order_by("at", "pk"))


def test_admin_changes_are_recorded_with_who_and_what(admin_client, category):
    add = admin_client.post(reverse("admin:rules_rule_add"), rule_post(category), follow=True)
    assert add.status_code == 200
    rule = Rule.objects.get(name="big orders")
    change_url = reverse("admin:rules_rule_change", args=[rule.pk])
    admin_client.post(change_url, rule_post(category, condition="payload.total > 500"))
    admin_client.post(change_url, rule_post(category, condition="payload.total > 500"))  # no change
    created, changed = entries(kind="rule", object_id=str(rule.pk))
    assert (created.action, created.actor_name, created.source) == ("created", "admin", "admin")
    assert created.before is None and created.after["condition"] == "payload.total > 100"
    assert changed.action == "changed" and changed.actor.username == "admin"
    assert changed.before["condition"] == "payload.total > 100"
    assert changed.after["condition"] == "payload.total > 500"
    assert changed.after["category"] == category.key  # items name categories by key
    # Shown in admin, with what changed.
    page = admin_client.get(reverse("admin:rules_auditentry_change", args=[changed.pk]))
    content = page.content.decode()
    assert "audit-diff" in content and "payload.total &gt; 500" in content
    assert "Restore this version" in content
    listing = admin_client.get(
        reverse("admin:rules_auditentry_changelist") + f"?kind=rule&object_id={rule.pk}"
    )
    assert listing.context["cl"].result_count == 2
    # The rule admin's bulk actions are recorded too.
    admin_client.post(
        reverse("admin:rules_rule_changelist"),
        {"action": "deactivate", "_selected_action": [rule.pk]},
    )
    last = entries(kind="rule")[-1]
    assert (last.before["is_active"], last.after["is_active"], last.actor_name) == (
        True,
        False,
        "admin",
    )


def test_categories_templates_and_deletes_are_recorded(admin_client, category):
    admin_client.post(
        reverse("admin:notify_category_change", args=[category.pk]),
        {
            "name": "Orders!",
            "key": "orders",
            "description": "",
            "default_mode": "immediate",
            "_save": "Save",
        },
    )
    [entry] = entries(kind="category", action="changed")
    assert entry.before["name"] == "Orders" and entry.after["name"] == "Orders!"
    assert entry.actor_name == "admin"
    template = MessageTemplate.objects.create(message="order_shipped", part="sms", body="Hi")
    admin_client.post(
        reverse("admin:notify_messagetemplate_delete", args=[template.pk]), {"post": "yes"}
    )
    created, deleted = entries(kind="template")
    assert (created.source, created.actor) == ("code", None)  # made from code: no user
    assert (deleted.action, deleted.actor_name, deleted.before["body"]) == (
        "deleted",
        "admin",
        "Hi",
    )


def test_a_rule_is_restored_to_an_earlier_version(admin_client, make_rule):
    rule = make_rule(name="Shipped", condition="payload.total > 1", priority=1)
    rule.condition, rule.priority = "payload.total > 99", 7
    rule.save()
    first = entries(kind="rule", action="created")[0]
    response = admin_client.post(
        reverse("admin:rules_auditentry_restore", args=[first.pk]), follow=True
    )
    assert "restored to the version of audit entry" in response.content.decode()
    rule.refresh_from_db()
    assert (rule.condition, rule.priority) == ("payload.total > 1", 1)
    restored = entries(kind="rule")[-1]
    assert restored.source == "restore" and restored.actor_name == "admin"
    assert restored.note == f"restored from audit entry #{first.pk}"
    # A deleted rule comes back (as a new row) from its deletion entry.
    rule.delete()
    deletion = entries(kind="rule", action="deleted")[0]
    admin_client.post(
        reverse("admin:rules_auditentry_changelist"),
        {"action": "restore_version", "_selected_action": [deletion.pk]},
    )
    back = Rule.objects.get(name="Shipped")
    assert back.condition == "payload.total > 1"


class FormsOnPage(HTMLParser):
    """Each <form> as (id, action, ids of the enclosing forms), and each submit
    input as (value, its form= attribute, ids of the enclosing forms)."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.forms: list[tuple[str, str, list[str]]] = []
        self.submits: list[tuple[str, str | None, list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag == "form":
            self.forms.append(
                (attributes.get("id", ""), attributes.get("action", ""), self.open[:])
            )
            self.open.append(attributes.get("id", ""))
        elif tag == "input" and attributes.get("type") == "submit":
            self.submits.append((attributes.get("value", ""), attributes.get("form"), self.open[:]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.open:
            self.open.pop()


def test_the_restore_form_is_not_nested_in_the_change_form(admin_client, make_rule):
    # Browsers drop a <form> nested in another: the restore form is its own,
    # after the change form, and the button names it with form=.
    make_rule(name="Shipped")
    entry = entries(kind="rule", action="created")[0]
    page = admin_client.get(reverse("admin:rules_auditentry_change", args=[entry.pk]))
    parsed = FormsOnPage()
    parsed.feed(page.content.decode())
    restore_url = reverse("admin:rules_auditentry_restore", args=[entry.pk])
    [(form_id, enclosing)] = [
        (f, outer) for f, action, outer in parsed.forms if action == restore_url
    ]
    assert form_id == "restore-form" and enclosing == []
    [(button_form, _)] = [(f, o) for v, f, o in parsed.submits if v == "Restore this version"]
    assert button_form == "restore-form"


def test_a_version_that_no_longer_validates_is_not_restored(make_rule):
    rule = make_rule(name="Shipped", message="order_shipped")
    entry = entries(kind="rule", action="created")[0]
    entry.after = {**entry.after, "condition": "payload.total >"}
    entry.save()
    rule.priority = 3
    rule.save()
    obj, problems = restore(entry)
    assert obj is None and "condition" in problems[0]
    rule.refresh_from_db()
    assert rule.priority == 3


def test_acting_names_the_user_for_code_paths(make_user, category):
    ops = make_user("opsperson")
    with acting(ops, "script"):
        Category.objects.create(key="billing", name="Billing")
    entry = entries(kind="category", action="created")[-1]
    assert (entry.object_repr, entry.actor, entry.source) == ("Billing", ops, "script")


# -- the ops group ---------------------------------------------------------------------------------


@pytest.fixture
def ops_client(client, make_user):
    group, missing = ensure_ops_group()
    assert not missing
    user = make_user("opsperson", is_staff=True)
    user.groups.add(group)
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "name, allowed",
    [
        ("admin:rules_rule_changelist", True),
        ("admin:rules_rule_add", True),
        ("admin:rules_signalbinding_add", True),
        ("admin:rules_auditentry_changelist", True),
        ("admin:notify_category_add", True),
        ("admin:notify_messagetemplate_add", True),
        ("admin:notify_event_changelist", False),
        ("admin:notify_delivery_changelist", False),
        ("admin:notify_apikey_changelist", False),
        ("admin:auth_user_changelist", False),
        ("admin:auth_group_changelist", False),
        ("admin:notify_suppression_changelist", False),
    ],
)
def test_the_ops_group_edits_configuration_and_nothing_else(ops_client, name, allowed):
    response = ops_client.get(reverse(name))
    assert (response.status_code == 200) is allowed, response.status_code


def test_the_ops_group_can_be_reset(db):
    from django.core.management import call_command

    # Migration rules/0004 creates the group; a transactional test that ran
    # earlier in this process flushes it, so the command also re-creates it.
    call_command("notify", "ops-group")
    group = Group.objects.get(name=OPS_GROUP)
    group.permissions.clear()
    call_command("notify", "ops-group")
    codenames = set(group.permissions.values_list("codename", flat=True))
    assert {
        "change_rule",
        "add_signalbinding",
        "view_auditentry",
        "change_messagetemplate",
    } <= codenames
    assert "change_event" not in codenames and "change_auditentry" not in codenames
