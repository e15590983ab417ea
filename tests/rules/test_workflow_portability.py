"""A rule's workflow steps in the export file and the audit log: they round-trip
through export and import; a bad step is named with its field and changes
nothing; each step added, edited or deleted is an entry of its rule, which a
restore puts back."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rules.audit import restore
from rules.models import AuditEntry, Rule, WorkflowStep
from rules.portability import ImportRejected, dumps, export_document, import_document, loads
from tests.rules import test_portability

configuration = test_portability.configuration  # the fixture: categories, rules, a binding
snapshot = test_portability.snapshot

ESCALATION = (
    {"kind": "channel", "channels": ["inapp"]},
    {"kind": "delay", "delay": timedelta(minutes=30)},
    {"kind": "channel", "channels": ["email"], "condition": "not read", "message": ""},
    {"kind": "delay", "delay_mode": "working_hours"},
    {"kind": "channel", "channels": ["sms"], "condition": "not read and category.critical"},
)


@pytest.fixture
def workflow(configuration):
    rule = Rule.objects.get(name="Order shipped")
    for position, fields in enumerate(ESCALATION):
        WorkflowStep.objects.create(rule=rule, position=position, **fields)
    return rule


def steps_of(rule_name: str) -> list[tuple]:
    return list(
        WorkflowStep.objects.filter(rule__name=rule_name)
        .order_by("position")
        .values_list("position", "kind", "channels", "condition", "delay", "delay_mode")
    )


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_steps_round_trip_through_export_and_import(workflow, fmt):
    before, steps = snapshot(), steps_of("Order shipped")
    document = export_document()
    [rule] = [r for r in document["rules"] if r["name"] == "Order shipped"]
    assert [s["kind"] for s in rule["steps"]] == ["channel", "delay", "channel", "delay", "channel"]
    assert rule["steps"][1]["delay"] == "00:30:00" and "position" not in rule["steps"][1]
    text = dumps(document, fmt)
    test_portability.empty_the_configuration()
    assert not WorkflowStep.objects.exists()
    import_document(loads(text))
    assert snapshot() == before and steps_of("Order shipped") == steps
    again = import_document(loads(text))
    assert again.unchanged["rules"] == 2 and not again.updated["rules"]


def test_an_import_edits_steps_in_place_and_keeps_their_ids(workflow):
    ids = list(WorkflowStep.objects.filter(rule=workflow).order_by("position").values_list("pk"))
    document = export_document()
    [rule] = [r for r in document["rules"] if r["name"] == "Order shipped"]
    rule["steps"][2]["condition"] = "not seen"
    del rule["steps"][4]
    report = import_document(document)
    assert report.updated["rules"] == 1
    kept = list(WorkflowStep.objects.filter(rule=workflow).order_by("position").values_list("pk"))
    assert kept == ids[:4]
    assert WorkflowStep.objects.get(pk=ids[2][0]).condition == "not seen"
    # A rule item without "steps" leaves them alone; "steps: []" removes them.
    rule.pop("steps")
    import_document(document)
    assert WorkflowStep.objects.filter(rule=workflow).count() == 4
    rule["steps"] = []
    import_document(document)
    assert not WorkflowStep.objects.filter(rule=workflow).exists()


def test_a_bad_step_is_named_with_its_field_and_changes_nothing(workflow):
    before, steps = snapshot(), steps_of("Order shipped")
    document = export_document()
    [rule] = [r for r in document["rules"] if r["name"] == "Order shipped"]
    rule["steps"][1]["delay"] = None  # a fixed delay of nothing
    rule["steps"][2]["condition"] = "not read and"
    rule["steps"][4]["colour"] = "red"
    rule["steps"].append({"kind": "channel", "channels": ["pigeon"]})
    with pytest.raises(ImportRejected) as caught:
        import_document(document)
    problems = caught.value.problems
    text = "\n".join(problems)

    def has(prefix: str, *words: str) -> bool:
        return any(p.startswith(prefix) and all(w in p for w in words) for p in problems)

    where = "rules[0] 'Order shipped'.steps"
    assert has(f"{where}[1]", "positive duration"), text
    assert has(f"{where}[2].condition:", "syntax error"), text
    assert has(f"{where}[4]:", "unknown field 'colour'"), text
    assert has(f"{where}[5].channels:", "pigeon"), text
    assert snapshot() == before and steps_of("Order shipped") == steps
    # The steps as a whole: a batch step must come first.
    document = export_document()
    [rule] = [r for r in document["rules"] if r["name"] == "Order shipped"]
    rule["steps"].append({"kind": "batch", "batch_window": "00:10:00"})
    with pytest.raises(ImportRejected) as caught:
        import_document(document)
    assert caught.value.problems == [
        f"{where}: step 6 (batch): a batch step must be the first step "
        "(events are collected as they arrive)"
    ]
    assert steps_of("Order shipped") == steps


def test_step_edits_are_in_the_audit_log_and_a_restore_puts_them_back(workflow):
    entries = AuditEntry.objects.filter(kind="rule", object_id=str(workflow.pk))
    assert entries.filter(note="workflow step 3 (channel) added").exists()
    original = steps_of("Order shipped")
    email = WorkflowStep.objects.get(rule=workflow, position=2)
    email.condition = "not seen"
    email.save()
    changed = entries.latest("pk")
    assert changed.action == "changed" and changed.note == "workflow step 3 (channel) changed"
    assert changed.before["steps"][2]["condition"] == "not read"
    assert changed.after["steps"][2]["condition"] == "not seen"
    WorkflowStep.objects.get(rule=workflow, position=4).delete()
    deleted = entries.latest("pk")
    assert deleted.note == "workflow step 5 (channel) deleted"
    assert len(deleted.before["steps"]) == 5 and len(deleted.after["steps"]) == 4
    _, problems = restore(changed)  # the five steps, the email "if not seen"
    assert problems == []
    assert [s[3] for s in steps_of("Order shipped")] == [
        "",
        "",
        "not seen",
        "",
        "not read and category.critical",
    ]
    # The entry of the last step's creation holds the workflow as first built.
    _, problems = restore(entries.get(note="workflow step 5 (channel) added"))
    assert problems == [] and steps_of("Order shipped") == original
    # Deleting the rule says so once, not once per step.
    count = entries.count()
    workflow.delete()
    assert entries.count() == count + 1 and entries.latest("pk").action == "deleted"
