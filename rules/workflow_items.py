"""A rule's workflow steps in the export format: ``steps`` in a rule item
(``rules.portability``), one mapping per step in order::

    - name: escalate
      ...
      steps:
        - {kind: channel, channels: [inapp]}
        - {kind: delay, delay: '00:30:00'}
        - {kind: channel, channels: [email], condition: not read}

The order is the workflow's (positions are not written). A rule item without
``steps`` leaves the rule's steps as they are; ``steps: []`` removes them.

Import checks each step with the form admin's inline uses
(``rules.forms.WorkflowStepForm``: channels configured, the template exists,
the condition compiles) and the steps as a whole (``rules.workflow.compile_steps``),
and names the step and the field of every problem
(``rules[0] 'escalate'.steps[2].condition: ...``, 0-based). Saving updates the
steps in place by position, so a step that stays where it was keeps its id
and the runs waiting on it (``notify.workflows.runner.resume_position``).
"""

from __future__ import annotations

import datetime
from typing import Any

from django.utils.duration import duration_string

from .workflow import EDITABLE_STEP_FIELDS, StepError, compile_step, compile_steps

# What a step item holds: what ops edit, but the position (the list's order).
STEP_ITEM_FIELDS = tuple(name for name in EDITABLE_STEP_FIELDS if name != "position")


def step_item(step: Any) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for name in STEP_ITEM_FIELDS:
        value = getattr(step, name)
        if isinstance(value, datetime.timedelta):
            value = duration_string(value)
        item[name] = list(value) if isinstance(value, list | tuple) else value
    return item


def step_items(rule: Any) -> list[dict[str, Any]]:
    """The rule's steps as items, in order ([] for a rule not saved yet)."""
    if rule.pk is None:
        return []
    from .models import WorkflowStep

    return [
        step_item(step)
        for step in WorkflowStep.objects.filter(rule_id=rule.pk).order_by("position", "id")
    ]


def clean_step_items(items: Any, where: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The steps of a rule item, checked: (cleaned rows with their positions,
    problems naming the step and the field)."""
    from .forms import WorkflowStepForm

    if not isinstance(items, list):
        return [], [f"{where}.steps: expected a list of steps"]
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, item in enumerate(items):
        place = f"{where}.steps[{number}]"
        if not isinstance(item, dict):
            problems.append(f"{place}: expected a mapping of fields, got {type(item).__name__}")
            continue
        unknown = sorted(set(item) - set(STEP_ITEM_FIELDS))
        for name in unknown:
            problems.append(
                f"{place}: unknown field '{name}' (known: {', '.join(sorted(STEP_ITEM_FIELDS))})"
            )
        if unknown:
            continue
        data = {name: "" if value is None else value for name, value in item.items()}
        data["channels"] = list(item.get("channels") or [])
        data["position"] = number
        form = WorkflowStepForm(data=data)
        if not form.is_valid():
            for name, errors in form.errors.as_data().items():
                at = f"{place}.{name}"
                if name == "__all__":  # the step as a whole: which field, if one
                    field = step_error_field({**form.cleaned_data, "position": number})
                    at = f"{place}.{field}" if field else place
                for message in (m for error in errors for m in error.messages):
                    if name == "__all__" and message.startswith(f"{field.replace('_', ' ')}: "):
                        message = message.split(": ", 1)[1]
                    problems.append(f"{at}: {message}")
            continue
        rows.append({**form.cleaned_data, "position": number, "id": None})
    if not problems:
        try:
            compile_steps(rows)
        except ValueError as exc:
            problems.append(f"{where}.steps: {exc}")
    return rows, problems


def step_error_field(row: dict[str, Any]) -> str:
    """The field a step's own check blames (``rules.workflow.StepError``), or ""."""
    try:
        compile_step(row, int(row.get("position") or 0))
    except StepError as exc:
        return exc.field
    except ValueError:
        return ""
    return ""


def save_steps(rule: Any, rows: list[dict[str, Any]]) -> None:
    """Make the rule's steps ``rows``: updated in place by position, the extra
    ones created, the ones past the end deleted (each save and delete goes
    through the model, so the audit log and the rules revision see it)."""
    from .models import WorkflowStep

    current = list(WorkflowStep.objects.filter(rule=rule).order_by("position", "id"))
    for number, row in enumerate(rows):
        step = current[number] if number < len(current) else WorkflowStep(rule=rule)
        changed = step.pk is None or step.position != number
        step.position = number
        for name in STEP_ITEM_FIELDS:
            value = row.get(name)
            if name == "channels":
                value = list(value or [])
            elif value is None and name not in ("delay", "batch_window", "batch_max"):
                value = ""
            if getattr(step, name) != value:
                setattr(step, name, value)
                changed = True
        if changed:
            step.save()
    for step in current[len(rows) :]:
        step.delete()
