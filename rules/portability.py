"""Configuration as a file: categories, message templates, rules and signal
bindings exported to YAML or JSON and imported back (staging -> production).

The document::

    format: notify-config
    version: 1
    categories: [{key, name, ...}]
    templates:  [{message, part, locale, body, sample_payload}]
    rules:      [{name, event_type, ..., category: <category key>, steps: [{kind, ...}]}]
    bindings:   [{model: app_label.model, signal, event_type, ...}]

Each item holds every field ops edit (ids and timestamps left out; a rule
names its category by key, a binding its model by label), so an audit entry
(``rules.audit``) stores items in this same shape and restoring one is an
import of one item.

Import is validated with the very forms admin uses (``admin.site``'s
``ModelAdmin.form`` of each model: conditions compiled, templates
trial-rendered, secrets refused in bindings...), in dependency order
(categories, templates, rules, bindings), inside ONE transaction: every
problem is reported, naming the item and the field
(``rules[3] 'Order shipped'.condition: syntax error ...``, 0-based), and if
there is any, nothing changes. Items are matched by natural key (category
key; template message, part and locale; rule name; binding model, signal and
event type): a match is updated, anything else created; what the file does
not mention is left alone.

Rows written by code rather than through admin's forms can fail those forms
(a rule naming a message that has no template, say), and so can their
export. ``skip_invalid=True`` imports every valid item and leaves the invalid
ones out, each listed in ``ImportReport.skipped`` with its problems; an item
that depends on a skipped one (a rule on a skipped new category) is skipped
in turn, naming the missing row. A malformed document (not a mapping, wrong
format or version, an unknown section, two items with one key) is refused
whole either way.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.apps import apps
from django.contrib import admin
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import DatabaseError, models, transaction
from django.forms.models import modelform_factory
from django.utils.dateparse import parse_duration
from django.utils.duration import duration_string

from .workflow_items import clean_step_items, save_steps, step_items

FORMAT = "notify-config"
VERSION = 1
SECTIONS = ("categories", "templates", "rules", "bindings")
SKIPPED_FIELDS = {"id", "created_at", "updated_at"}
# The exit code of ``notify import --skip-invalid`` when items were skipped and
# none could be imported (a refused file exits 1, like any command error).
NOTHING_VALID_EXIT_CODE = 3


@dataclass(frozen=True)
class Kind:
    """One section of the document and the model behind it."""

    section: str
    audit_kind: str  # AuditEntry.Kind
    model_label: str
    key_fields: tuple[str, ...]  # the natural key, in item terms

    @property
    def model(self) -> type[models.Model]:
        return apps.get_model(self.model_label)

    def key(self, item: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(item.get(f, "") for f in self.key_fields)

    def label(self, item: dict[str, Any]) -> str:
        return " ".join(str(part) for part in self.key(item) if part not in ("", None))


KINDS = {
    "categories": Kind("categories", "category", "notify.Category", ("key",)),
    "templates": Kind(
        "templates", "template", "notify.MessageTemplate", ("message", "part", "locale")
    ),
    "rules": Kind("rules", "rule", "rules.Rule", ("name",)),
    "bindings": Kind(
        "bindings", "binding", "rules.SignalBinding", ("model", "signal", "event_type")
    ),
}
KIND_BY_MODEL = {kind.model_label.lower(): kind for kind in KINDS.values()}


def kind_of(obj_or_model: Any) -> Kind | None:
    model = obj_or_model if isinstance(obj_or_model, type) else type(obj_or_model)
    return KIND_BY_MODEL.get(model._meta.label_lower)


# -- export ------------------------------------------------------------------------------------


def exported_fields(model: type[models.Model]) -> list[models.Field]:
    return [
        f
        for f in model._meta.concrete_fields
        if f.name not in SKIPPED_FIELDS and not f.primary_key and f.editable
    ]


def natural_key(related: models.Model) -> str:
    """How an item names a related row: a category by key, a model by label."""
    if related._meta.label_lower == "contenttypes.contenttype":
        return f"{related.app_label}.{related.model}"
    if related._meta.label_lower == "notify.category":
        return related.key
    raise ValueError(f"no natural key for {related._meta.label}")


def value_to_item(f: models.Field, obj: models.Model) -> Any:
    if f.is_relation:
        if getattr(obj, f.attname) is None:
            return None
        return natural_key(getattr(obj, f.name))
    value = f.value_from_object(obj)
    if isinstance(value, datetime.timedelta):
        return duration_string(value)
    if isinstance(value, datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    return value


def serialize(obj: models.Model) -> dict[str, Any]:
    """One item in the export format (JSON-safe); a rule's holds its workflow
    steps (``rules.workflow_items``)."""
    item: dict[str, Any] = {}
    for f in exported_fields(type(obj)):
        name = "model" if f.name == "content_type" else f.name
        item[name] = value_to_item(f, obj)
    if obj._meta.label_lower == "rules.rule":
        item["steps"] = step_items(obj)
    return item


def export_document(now: datetime.datetime | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    if now is not None:
        document["exported_at"] = now.isoformat()
    for section, kind in KINDS.items():
        rows = kind.model.objects.all()
        items = [serialize(obj) for obj in rows]
        items.sort(key=lambda item, kind=kind: [str(v) for v in kind.key(item)])
        document[section] = items
    return document


class _LiteralDumper:
    """PyYAML dumper class (made lazily: PyYAML is imported only when used)."""

    cls: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls.cls is None:
            import yaml

            class Dumper(yaml.SafeDumper):
                pass

            def text(dumper: Any, value: str) -> Any:
                style = "|" if "\n" in value else None
                return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

            Dumper.add_representer(str, text)
            cls.cls = Dumper
        return cls.cls


def dumps(document: dict[str, Any], fmt: str = "yaml") -> str:
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    import yaml

    return yaml.dump(
        document,
        Dumper=_LiteralDumper.get(),
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )


def loads(text: str, fmt: str | None = None) -> Any:
    """Parse JSON or YAML (``fmt`` None: JSON if it looks like it, else YAML)."""
    stripped = text.lstrip()
    if fmt == "json" or (fmt is None and stripped.startswith("{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportRejected([f"not valid JSON: {exc}"]) from exc
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ImportRejected([f"not valid YAML: {exc}"]) from exc


# -- import ------------------------------------------------------------------------------------


class ImportRejected(Exception):
    """The file was refused; ``problems`` names each item and field. Nothing changed.

    ``invalid_items`` lists the items at fault when the document itself was
    sound (so ``skip_invalid=True`` would import the rest); empty when the
    document was refused whole."""

    def __init__(self, problems: list[str], invalid_items: list[SkippedItem] | None = None):
        super().__init__("\n".join(problems))
        self.problems = problems
        self.invalid_items = invalid_items or []


@dataclass(frozen=True)
class SkippedItem:
    """An invalid item left out by ``import_document(..., skip_invalid=True)``."""

    where: str  # "rules[3] 'Order shipped'": section, 0-based index, natural key
    problems: tuple[str, ...]  # each naming the field and the reason


@dataclass
class ImportReport:
    created: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SECTIONS, 0))
    updated: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SECTIONS, 0))
    unchanged: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SECTIONS, 0))
    skipped: list[SkippedItem] = field(default_factory=list)
    skip_invalid: bool = False
    dry_run: bool = False

    @property
    def imported(self) -> int:
        """Valid items taken in: created, updated or already as in the file."""
        return sum(self.created[s] + self.updated[s] + self.unchanged[s] for s in SECTIONS)

    @property
    def problems(self) -> list[str]:
        return [problem for item in self.skipped for problem in item.problems]

    def summary(self) -> str:
        parts = []
        for section in SECTIONS:
            c, u, n = self.created[section], self.updated[section], self.unchanged[section]
            if c or u or n:
                parts.append(f"{section}: {c} created, {u} updated, {n} unchanged")
        text = "; ".join(parts) or ("no valid item" if self.skipped else "nothing to import")
        if self.skip_invalid or self.skipped:
            text += f"\nimported {self.imported}, skipped {len(self.skipped)}"
        return f"{text} (dry run: nothing was saved)" if self.dry_run else text


class _DryRunRollback(Exception):
    pass


def admin_form_class(model: type[models.Model]) -> type[forms.ModelForm]:
    """The form admin edits ``model`` with (so an import validates exactly as
    admin does); a plain model form if it is not registered."""
    try:
        model_admin = admin.site.get_model_admin(model)
    except Exception:  # NotRegistered
        return modelform_factory(model, fields="__all__")
    return model_admin.form


def _form_data(kind: Kind, item: dict[str, Any], problems: list[str], where: str) -> dict[str, Any]:
    """The item as form data; foreign keys by natural key are looked up."""
    model = kind.model
    fields = {("model" if f.name == "content_type" else f.name): f for f in exported_fields(model)}
    form_fields = admin_form_class(model).base_fields
    data: dict[str, Any] = {}
    for name, value in item.items():
        f = fields.get(name)
        if f is None:
            problems.append(f"{where}: unknown field '{name}' (known: {', '.join(sorted(fields))})")
            continue
        if f.is_relation:
            pk = _lookup(f, value)
            if pk is None:
                problems.append(
                    f"{where}.{name}: no {f.related_model._meta.verbose_name} '{value}'"
                )
                continue
            value = pk
        elif isinstance(form_fields.get(name), forms.JSONField) and not isinstance(value, str):
            value = json.dumps(value)  # a JSON form field reads text
        elif isinstance(f, models.TimeField) and isinstance(value, int | float):
            problems.append(f"{where}.{name}: write the time in quotes, e.g. '09:00'")
            continue
        elif isinstance(f, models.DurationField) and value is not None:
            if not isinstance(value, str) or parse_duration(value) is None:
                problems.append(
                    f"{where}.{name}: '{value}' is not a duration ('01:30:00', '2 00:00:00')"
                )
                continue
        elif isinstance(f, models.BooleanField):
            value = bool(value)
        elif value is None:
            value = ""
        data["content_type" if name == "model" else name] = value
    return data


def _lookup(f: models.Field, value: Any) -> Any:
    if value in (None, ""):
        return None
    related = f.related_model
    try:
        if related._meta.label_lower == "contenttypes.contenttype":
            app_label, _, model = str(value).partition(".")
            return related.objects.get_by_natural_key(app_label, model.lower()).pk
        if related._meta.label_lower == "notify.category":
            return related.objects.get(key=value).pk
    except ObjectDoesNotExist:
        return None
    return None


def find_existing(kind: Kind, item: dict[str, Any]) -> models.Model | None:
    model = kind.model
    if kind.section == "bindings":
        app_label, _, name = str(item.get("model", "")).partition(".")
        return model.objects.filter(
            content_type__app_label=app_label,
            content_type__model=name.lower(),
            signal=item.get("signal", ""),
            event_type=item.get("event_type", ""),
        ).first()
    lookup = {f: item.get(f) if item.get(f) is not None else "" for f in kind.key_fields}
    return model.objects.filter(**lookup).first()


def _errors(form: forms.Form, where: str) -> list[str]:
    out = []
    for name, errors in form.errors.as_data().items():
        place = (
            where if name == "__all__" else f"{where}.{'model' if name == 'content_type' else name}"
        )
        for error in errors:
            for message in error.messages:
                out.append(f"{place}: {message}")
    return out


def import_item(
    kind: Kind,
    item: Any,
    where: str,
    instance: models.Model | None = None,
) -> tuple[str, models.Model | None, list[str]]:
    """Validate and save one item through the admin form, in a savepoint.

    Fields the item leaves out keep their current values (their defaults for
    a new row). Returns ("created" | "updated" | "unchanged" | "invalid",
    object, problems)."""
    if not isinstance(item, dict):
        return (
            "invalid",
            None,
            [f"{where}: expected a mapping of fields, got {type(item).__name__}"],
        )
    label = kind.label(item)
    where = f"{where} '{label}'" if label else where
    problems: list[str] = []
    steps: list[dict[str, Any]] | None = None
    if kind.section == "rules" and "steps" in item:
        steps, problems = clean_step_items(item["steps"], where)
        item = {name: value for name, value in item.items() if name != "steps"}
    data = _form_data(kind, item, problems, where)
    if problems:
        return "invalid", None, problems
    if instance is None:
        instance = find_existing(kind, item)
    before = serialize(instance) if instance is not None else None
    base = dict(before if before is not None else serialize(kind.model()))
    base.pop("steps", None)
    merged = {**_form_data(kind, base, [], where), **data}
    form = admin_form_class(kind.model)(data=merged, instance=instance)
    if not form.is_valid():
        return "invalid", None, _errors(form, where)
    obj = form.save(commit=False)
    # A form strips surrounding whitespace (a browser's text); a file keeps it
    # (a template's last newline), so the text is stored exactly as given.
    for name, form_field in form.fields.items():
        value = item.get(name)
        if (
            isinstance(form_field, forms.CharField)
            and isinstance(value, str)
            and form.cleaned_data.get(name) == value.strip()
        ):
            setattr(obj, name, value)
    # Fields the admin form does not edit (if any) are checked by the model field.
    for f in exported_fields(kind.model):
        name = "model" if f.name == "content_type" else f.name
        if f.name in form.fields or name not in item or f.is_relation:
            continue
        try:
            setattr(obj, f.attname, f.clean(f.to_python(item[name]), obj))
        except ValidationError as exc:
            problems.extend(f"{where}.{name}: {m}" for m in exc.messages)
    if problems:
        return "invalid", None, problems
    try:
        with transaction.atomic():
            obj.save()
            form.save_m2m()
            if steps is not None:
                save_steps(obj, steps)
    except (DatabaseError, ValidationError) as exc:
        return "invalid", None, [f"{where}: {exc}"]
    after = serialize(obj)
    if before is None:
        return "created", obj, []
    return ("unchanged" if before == after else "updated"), obj, []


def validate_document(document: Any) -> list[str]:
    if not isinstance(document, dict):
        return ["the file must hold a mapping with categories, templates, rules and bindings"]
    problems = []
    if document.get("format", FORMAT) != FORMAT:
        problems.append(f"format: expected '{FORMAT}', got {document.get('format')!r}")
    if document.get("version", VERSION) != VERSION:
        problems.append(
            f"version: this notify reads version {VERSION}, not {document.get('version')!r}"
        )
    unknown = set(document) - {"format", "version", "exported_at", *SECTIONS}
    for name in sorted(unknown):
        problems.append(f"{name}: unknown section (known: {', '.join(SECTIONS)})")
    for section in SECTIONS:
        items = document.get(section, [])
        if items is not None and not isinstance(items, list):
            problems.append(f"{section}: expected a list")
            continue
        seen: dict[tuple, int] = {}
        for i, item in enumerate(items or []):
            if isinstance(item, dict):
                key = KINDS[section].key(item)
                if key in seen:
                    problems.append(
                        f"{section}[{i}] '{KINDS[section].label(item)}': the same as "
                        f"{section}[{seen[key]}]"
                    )
                seen.setdefault(key, i)
    return problems


def import_document(
    document: Any, *, dry_run: bool = False, skip_invalid: bool = False, actor: Any = None
) -> ImportReport:
    """Import everything or nothing; raise ``ImportRejected`` listing every problem.

    With ``skip_invalid`` the valid items are imported and the invalid ones
    listed in ``report.skipped``; a malformed document is still refused whole.
    A dry run validates and reports exactly the same, then saves nothing."""
    from .audit import acting

    problems = validate_document(document)
    if problems:
        raise ImportRejected(problems)
    report = ImportReport(skip_invalid=skip_invalid, dry_run=dry_run)
    try:
        with transaction.atomic(), acting(actor, source="import"):
            for section in SECTIONS:
                kind = KINDS[section]
                for i, item in enumerate(document.get(section) or []):
                    where = f"{section}[{i}]"
                    outcome, _, item_problems = import_item(kind, item, where)
                    if item_problems or outcome == "invalid":
                        label = kind.label(item) if isinstance(item, dict) else ""
                        report.skipped.append(
                            SkippedItem(
                                f"{where} '{label}'" if label else where, tuple(item_problems)
                            )
                        )
                    else:
                        getattr(report, outcome)[section] += 1
            if report.skipped and not skip_invalid:
                raise ImportRejected(report.problems, report.skipped)
            if dry_run:
                raise _DryRunRollback
    except _DryRunRollback:
        pass
    return report


def restore_item(
    kind: Kind, item: dict[str, Any], instance: models.Model | None, note: str, actor: Any
) -> tuple[models.Model | None, list[str]]:
    """Save ``item`` over ``instance`` (or as a new row); (object, problems)."""
    from .audit import acting

    with transaction.atomic(), acting(actor, source="restore", note=note):
        _, obj, problems = import_item(kind, item, kind.audit_kind, instance=instance)
        if problems:
            transaction.set_rollback(True)
            return None, problems
    return obj, []
