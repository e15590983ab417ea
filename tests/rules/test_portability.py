"""Export and import of the ops configuration: a round trip into an empty
database reproduces it exactly; a bad file changes nothing and names each problem."""

from __future__ import annotations

import json
from datetime import time, timedelta

import pytest
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command

from notify.models import Category, MessageTemplate
from rules.models import AuditEntry, Rule, SignalBinding
from rules.portability import (
    ImportRejected,
    dumps,
    export_document,
    import_document,
    loads,
    serialize,
)

MODELS = (Rule, SignalBinding, MessageTemplate, Category)


@pytest.fixture
def configuration(db):
    orders = Category.objects.create(key="orders", name="Orders", description="Order updates")
    security = Category.objects.create(
        key="security", name="Security", critical=True, critical_reason="Account safety"
    )
    MessageTemplate.objects.create(
        message="order_shipped",
        part="email.subject",
        body="Shipped: {{ payload.order_id }}",
        sample_payload={"order_id": "A-1"},
    )
    MessageTemplate.objects.create(
        message="order_shipped",
        part="email.txt",
        locale="fr",
        body="Bonjour {{ recipient.name }},\n\nVotre commande {{ payload.order_id }} est partie.\n"
        "{{ settings_url }}\n{% if unsubscribe_url %}{{ unsubscribe_url }}{% endif %}\n",
        sample_payload={"order_id": "A-1"},
    )
    Rule.objects.create(
        name="Order shipped",
        event_type="order.shipped",
        condition="payload.total > 10",
        category=orders,
        recipients=["payload:customer_id", "followers"],
        channels=["email", "sms"],
        message="order_shipped",
        priority=5,
        stop_processing=True,
        throttle_limit=3,
        throttle_window=timedelta(hours=1),
        throttle_action="drop",
        dedup_key="payload.order_id",
        dedup_window=timedelta(minutes=30),
        fallback={"sms": "email"},
        active_days=[0, 1, 2, 3, 4],
        active_from=time(9),
        active_until=time(17, 30),
        active_timezone="Europe/Paris",
    )
    Rule.objects.create(
        name="Reminder",
        event_type="meeting.*",
        category=security,
        recipients=["topic:meetings"],
        channels=[],
        message="order_shipped",
        delay=timedelta(days=1, hours=2),
        is_active=False,
        dry_run=True,
        exclude_actor=False,
    )
    SignalBinding.objects.create(
        content_type=ContentType.objects.get_for_model(Group),
        signal="updated",
        event_type="group.renamed",
        changed_fields=["name"],
        payload_fields=["name"],
        description="Renames",
    )


def snapshot() -> dict:
    return {
        model._meta.label: sorted(
            (serialize(obj) for obj in model.objects.all()),
            key=lambda i: json.dumps(i, sort_keys=True),
        )
        for model in MODELS
    }


def empty_the_configuration() -> None:
    for model in MODELS:
        model.objects.all().delete()
    assert all(not model.objects.exists() for model in MODELS)


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_export_then_import_into_an_empty_database_reproduces_it(configuration, fmt):
    before = snapshot()
    text = dumps(export_document(), fmt)
    if fmt == "yaml":
        assert "body: |" in text  # multi-line templates stay readable
    empty_the_configuration()
    report = import_document(loads(text))
    assert report.created == {"categories": 2, "templates": 2, "rules": 2, "bindings": 1}
    assert snapshot() == before
    assert dumps(export_document(), fmt) == text
    # Importing the same file again changes nothing.
    again = import_document(loads(text))
    assert again.unchanged == {"categories": 2, "templates": 2, "rules": 2, "bindings": 1}
    assert not any(again.created.values()) and not any(again.updated.values())
    assert AuditEntry.objects.filter(source="import", action="created").count() == 7


def test_an_invalid_file_changes_nothing_and_names_each_problem(configuration):
    before = snapshot()
    document = export_document()
    document["categories"].append({"key": "Not a slug!", "name": "Bad"})
    document["templates"][0]["body"] = "{{ payload.order_id "
    document["rules"][0]["condition"] = "payload.total >"
    document["rules"][0]["priority"] = 99  # valid, but must not be applied either
    document["rules"][1]["category"] = "nope"
    document["rules"].append({**document["rules"][0], "name": "Copy", "colour": "blue"})
    document["rules"].append(
        {
            **document["rules"][0],
            "name": "Bad recipients",
            "recipients": ["everyone"],
            "condition": "",
        }
    )
    document["bindings"][0]["payload_fields"] = ["name", "password"]
    document["bindings"].append(
        {**document["bindings"][0], "model": "auth.user", "payload_fields": ["password"]}
    )
    with pytest.raises(ImportRejected) as caught:
        import_document(document)
    problems = caught.value.problems
    text = "\n".join(problems)

    def has(prefix: str, *words: str) -> bool:
        return any(p.startswith(prefix) and all(w in p for w in words) for p in problems)

    assert has("categories[2] 'Not a slug!'.key:"), text
    assert has("templates[0] 'order_shipped email.subject'.body:", "syntax error"), text
    assert has("rules[0] 'Order shipped'.condition:", "syntax error"), text
    assert has("rules[1] 'Reminder'.category:", "no category 'nope'"), text
    assert has("rules[2] 'Copy':", "unknown field 'colour'"), text
    assert has("rules[3] 'Bad recipients'.recipients:", "unknown recipient kind 'everyone'"), text
    assert has("bindings[0] 'auth.group updated group.renamed'.payload_fields:", "password"), text
    assert has("bindings[1] 'auth.user updated group.renamed'.payload_fields:", "secret"), text
    assert snapshot() == before
    assert not AuditEntry.objects.filter(source="import").exists()


def test_a_malformed_document_is_refused_whole(db):
    for document, message in [
        ([], "must hold a mapping"),
        ({"format": "other"}, "format: expected 'notify-config'"),
        ({"rules": {"name": "x"}}, "rules: expected a list"),
        ({"colours": []}, "colours: unknown section"),
        ({"rules": [{"name": "a"}, {"name": "a"}]}, "rules[1] 'a': the same as rules[0]"),
        ({"rules": ["just text"]}, "rules[0]: expected a mapping"),
    ]:
        with pytest.raises(ImportRejected) as caught:
            import_document(document)
        assert any(message in p for p in caught.value.problems), caught.value.problems
    with pytest.raises(ImportRejected, match="not valid YAML"):
        loads("rules: [unclosed")


def test_the_command_line(configuration, tmp_path, capsys):
    path = tmp_path / "config.json"
    call_command("notify", "export", "--format", "json", "-o", str(path))
    document = json.loads(path.read_text())
    assert document["format"] == "notify-config" and len(document["rules"]) == 2
    call_command("notify", "export")
    assert "rules:" in capsys.readouterr().out
    document["rules"][0]["priority"] = 42
    path.write_text(json.dumps(document))
    call_command("notify", "import", str(path), "--dry-run")
    out = capsys.readouterr().out
    assert "rules: 0 created, 1 updated, 1 unchanged" in out
    assert out.strip().endswith("(dry run: nothing was saved)")
    assert Rule.objects.get(name="Order shipped").priority == 5
    call_command("notify", "import", str(path))
    assert Rule.objects.get(name="Order shipped").priority == 42
    document["rules"][0]["condition"] = "payload.total >"
    path.write_text(json.dumps(document))
    with pytest.raises(
        CommandError, match=r"(?s)nothing was imported.*rules\[0\] 'Order shipped'\.condition"
    ):
        call_command("notify", "import", str(path))


# -- items the admin forms would refuse, made by the application's own code ---------------------


@pytest.fixture
def made_by_code(configuration):
    """Rows saved by code, past the admin forms: a category whose key is not a
    slug, a rule on it, and a rule naming a message that has no template."""
    vip = Category.objects.create(key="VIP customers", name="VIP")
    Rule.objects.create(
        name="VIP welcome",
        event_type="user.joined",
        category=vip,
        recipients=["actor"],
        message="order_shipped",
    )
    Rule.objects.create(
        name="Welcome",
        event_type="user.joined",
        category=Category.objects.get(key="orders"),
        recipients=["actor"],
        message="welcome_email",
    )


def exported_then_emptied(tmp_path):
    path = tmp_path / "config.json"
    call_command("notify", "export", "--format", "json", "-o", str(path))
    empty_the_configuration()
    return path


INVALID = (
    "categories[0] 'VIP customers'.key:",
    "rules[2] 'VIP welcome'.category: no category 'VIP customers'",
    "rules[3] 'Welcome'.message: no message template 'welcome_email'",
)


def test_an_export_with_invalid_items_is_refused_naming_each_one(made_by_code, tmp_path):
    path = exported_then_emptied(tmp_path)
    for extra in ([], ["--dry-run"]):
        with pytest.raises(CommandError) as caught:
            call_command("notify", "import", str(path), *extra)
        message = str(caught.value)
        assert "nothing was imported" in message
        for problem in INVALID:
            assert problem in message, message
        assert "3 invalid item(s): fix them, or import the valid items with --skip-invalid" in (
            message
        )
        assert caught.value.returncode == 1
        assert all(not model.objects.exists() for model in MODELS)
    assert not AuditEntry.objects.filter(source="import").exists()


def test_skip_invalid_imports_the_rest_and_names_each_skipped_item(made_by_code, tmp_path, capsys):
    path = exported_then_emptied(tmp_path)
    call_command("notify", "import", str(path), "--skip-invalid", "--dry-run")
    dry = capsys.readouterr().out.strip().splitlines()
    assert all(not model.objects.exists() for model in MODELS)
    call_command("notify", "import", str(path), "--skip-invalid")
    out = capsys.readouterr().out.strip().splitlines()

    # A dry run reports exactly what the import does.
    assert dry[:-1] == out[:-1]
    assert dry[-1] == out[-1] + " (dry run: nothing was saved)"
    skipped = [line for line in out if line.startswith("skipped ")]
    assert len(skipped) == 3
    for line, problem in zip(skipped, INVALID, strict=True):
        assert line.startswith("skipped " + problem), line
    assert out[-2].startswith("categories: 2 created, 0 updated, 0 unchanged; templates: 2")
    assert out[-1] == "imported 7, skipped 3"
    assert set(Rule.objects.values_list("name", flat=True)) == {"Order shipped", "Reminder"}
    assert set(Category.objects.values_list("key", flat=True)) == {"orders", "security"}
    assert SignalBinding.objects.count() == 1 and MessageTemplate.objects.count() == 2
    assert AuditEntry.objects.filter(source="import", action="created").count() == 7


def test_skip_invalid_with_nothing_valid_exits_with_its_own_code(db, tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(
        "format: notify-config\nversion: 1\n"
        "rules:\n  - name: Broken\n    event_type: order.shipped\n    condition: 'payload.total >'\n"
    )
    for extra in ([], ["--dry-run"]):
        with pytest.raises(CommandError, match="nothing could be imported") as caught:
            call_command("notify", "import", str(path), "--skip-invalid", *extra)
        assert caught.value.returncode == 3
        out = capsys.readouterr().out
        assert "skipped rules[0] 'Broken'.condition:" in out
        assert "imported 0, skipped 1" in out
    assert not Rule.objects.exists()
    # Nothing invalid: exit 0, with the same summary line.
    path.write_text("format: notify-config\nversion: 1\ncategories:\n  - {key: news, name: News}\n")
    call_command("notify", "import", str(path), "--skip-invalid")
    assert capsys.readouterr().out.strip().endswith("imported 1, skipped 0")


def test_skip_invalid_still_refuses_a_malformed_document(db):
    document = {"rules": [{"name": "a"}, {"name": "a"}]}
    with pytest.raises(ImportRejected, match=r"rules\[1\] 'a': the same as rules\[0\]"):
        import_document(document, skip_invalid=True)


def test_the_report_lists_skipped_items_with_their_problems(made_by_code):
    document = export_document()
    document["rules"][0]["condition"] = "payload.total >"
    document["rules"][0]["priority"] = "high"
    report = import_document(document, skip_invalid=True)
    where = [item.where for item in report.skipped]
    assert where == [
        "categories[0] 'VIP customers'",
        "rules[0] 'Order shipped'",
        "rules[3] 'Welcome'",
    ]
    assert len(report.skipped[1].problems) == 2  # the condition and the priority
    assert report.imported == 7 and report.skipped[1].problems[0].startswith(where[1] + ".")
