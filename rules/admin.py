"""Admin for the rules engine: rules (with preview and dry run), signal
bindings, and the audit log with restore.

Every save is validated by the forms in ``rules.forms``; every change, bulk
ones included, moves the configuration revision so each process rebuilds its
index, and is recorded in the audit log with the signed-in user.

The preview page needs the pipeline, which the rules app never imports: the
view is found by dotted path, ``NOTIFY["RULE_PREVIEW_VIEW"]`` (default
``notify.admin.preview.rule_preview``).
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.module_loading import import_string
from django.utils.safestring import SafeString
from django.utils.translation import ngettext

from .audit import AuditedAdminMixin, acting, record, restore, version_of
from .forms import (
    RuleForm,
    SignalBindingForm,
    WorkflowStepForm,
    WorkflowStepFormSet,
    model_field_map,
)
from .models import AuditEntry, ConfigRevision, Rule, SignalBinding, WorkflowStep
from .portability import KINDS, serialize

DEFAULT_PREVIEW_VIEW = "notify.admin.preview.rule_preview"
PRE = "white-space: pre-wrap; max-height: 24em; overflow: auto; margin: 0; max-width: 60em"


def pretty(value: Any) -> SafeString:
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    return format_html('<pre style="{}">{}</pre>', PRE, text)


class WorkflowStepInline(admin.StackedInline):
    """The rule's workflow, in order: ↑/↓ move a step (the change form's script
    renumbers the hidden positions); no steps: the rule sends on its channels."""

    model = WorkflowStep
    form = WorkflowStepForm
    formset = WorkflowStepFormSet
    extra = 0
    ordering = ("position", "id")
    verbose_name = "workflow step"
    verbose_name_plural = "Workflow steps (empty: send on the rule's channels at once)"
    classes = ("workflow-steps",)
    fieldsets = (
        (None, {"fields": ("position", ("kind", "condition"))}),
        ("Channel step", {"fields": ("channels", "message")}),
        ("Delay step", {"fields": (("delay_mode", "delay", "delay_until_path"),)}),
        ("Batch step", {"fields": (("batch_window", "batch_key", "batch_max"),)}),
    )


@admin.register(Rule)
class RuleAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = RuleForm
    inlines = (WorkflowStepInline,)
    change_form_template = "admin/rules/rule/change_form.html"
    list_display = (
        "name",
        "event_type",
        "category",
        "channel_list",
        "is_active",
        "dry_run",
        "priority",
        "updated_at",
    )
    list_filter = ("is_active", "dry_run", "category")
    search_fields = ("name", "event_type")
    list_select_related = ("category",)
    actions = ("activate", "deactivate")
    fieldsets = (
        (None, {"fields": ("name", "description", ("is_active", "dry_run"), "priority")}),
        ("When", {"fields": ("event_type", "condition", "stop_processing")}),
        (
            "What and to whom",
            {
                "fields": (
                    "category",
                    "message",
                    "recipients",
                    "exclude_actor",
                    "channels",
                    "fallback",
                )
            },
        ),
        (
            "Later: delays, reminders, active hours",
            {
                "classes": ("collapse",),
                "description": "Outside the active window the rule's deliveries are held until "
                "it opens (recorded as outside_active_window); the rule still matches.",
                "fields": (
                    "delay",
                    ("send_at_path", "send_at_offset"),
                    "cancel_condition",
                    "active_days",
                    ("active_from", "active_until", "active_timezone"),
                ),
            },
        ),
        (
            "How often: throttling and deduplication",
            {
                "classes": ("collapse",),
                "description": "Over the limit, a notification is folded into the user's next "
                "digest or dropped; either way it is recorded as throttled. A duplicate (same "
                "key within the window) notifies nobody; the event records why.",
                "fields": (
                    ("throttle_limit", "throttle_window"),
                    ("throttle_scope", "throttle_action"),
                    ("dedup_key", "dedup_window"),
                ),
            },
        ),
    )

    @admin.display(description="channels")
    def channel_list(self, rule: Rule) -> str:
        return ", ".join(rule.channels) if rule.channels else "(defaults)"

    def get_urls(self) -> list:
        preview = path(
            "<path:object_id>/preview/",
            self.admin_site.admin_view(self.preview_view),
            name="rules_rule_preview",
        )
        return [preview, *super().get_urls()]

    def preview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Preview and dry run of one rule (the view lives with the pipeline)."""
        rule = get_object_or_404(Rule, pk=object_id)
        if not self.has_view_or_change_permission(request, rule):
            raise PermissionDenied
        setting = getattr(settings, "NOTIFY", {}).get("RULE_PREVIEW_VIEW", DEFAULT_PREVIEW_VIEW)
        with acting(request.user, "admin"):
            return import_string(setting)(self, request, rule)

    def _set_active(self, request: HttpRequest, queryset: QuerySet, active: bool) -> None:
        # ``update`` sends no post_save, so the revision and the audit are written here.
        with transaction.atomic():
            rules = list(queryset.exclude(is_active=active).select_for_update())
            before = {rule.pk: serialize(rule) for rule in rules}
            count = Rule.objects.filter(pk__in=list(before)).update(
                is_active=active, updated_at=timezone.now()
            )
            if count:
                ConfigRevision.bump("rules")
            for rule in Rule.objects.filter(pk__in=list(before)).select_related("category"):
                record(rule, AuditEntry.Action.CHANGED, before[rule.pk], serialize(rule))
        state = "activated" if active else "deactivated"
        self.message_user(
            request,
            ngettext("%(count)d rule %(state)s.", "%(count)d rules %(state)s.", count)
            % {"count": count, "state": state},
            messages.SUCCESS,
        )

    @admin.action(description="Activate selected rules", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_active(request, queryset, True)

    @admin.action(description="Deactivate selected rules", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_active(request, queryset, False)


@admin.register(SignalBinding)
class SignalBindingAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = SignalBindingForm
    change_form_template = "admin/rules/signalbinding/change_form.html"
    list_display = (
        "model_label",
        "signal",
        "event_type",
        "fields_shown",
        "is_active",
        "updated_at",
    )
    list_filter = ("is_active", "signal", ("content_type", admin.RelatedOnlyFieldListFilter))
    search_fields = ("event_type", "content_type__model", "content_type__app_label")
    list_select_related = ("content_type",)
    fieldsets = (
        (
            None,
            {
                "description": "When a row of the model is saved or deleted through Django, an "
                "event of this type is stored in the same transaction and processed after it "
                "commits; every running process follows the edit within seconds, with no "
                "restart. Bulk operations send no Django signals and make no events: "
                "QuerySet.update(), bulk_create(), bulk_update() and raw SQL.",
                "fields": ("content_type", "signal", "event_type", "is_active"),
            },
        ),
        ("Payload", {"fields": ("payload_fields", "changed_fields", "actor_field", "description")}),
    )

    @admin.display(description="model", ordering="content_type__model")
    def model_label(self, binding: SignalBinding) -> str:
        return binding.model_label

    @admin.display(description="payload fields")
    def fields_shown(self, binding: SignalBinding) -> str:
        return ", ".join(binding.payload_fields or []) or "(pk only)"

    def render_change_form(self, request: HttpRequest, context: dict, *args: Any, **kwargs: Any):
        context["field_map_json"] = model_field_map()
        return super().render_change_form(request, context, *args, **kwargs)


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    change_form_template = "admin/rules/auditentry/change_form.html"
    list_display = ("at", "actor_shown", "kind", "object_repr", "action", "source", "changed_keys")
    list_filter = ("kind", "action", "source")
    search_fields = ("object_repr", "actor_name", "=object_id")
    date_hierarchy = "at"
    show_full_result_count = False
    actions = ("restore_version",)
    fields = (
        ("at", "actor_shown", "source"),
        ("kind", "object_id", "object_repr", "action"),
        "note",
        "differences",
        "before_shown",
        "after_shown",
    )
    readonly_fields = (
        "at",
        "actor_shown",
        "source",
        "kind",
        "object_id",
        "object_repr",
        "action",
        "note",
        "differences",
        "before_shown",
        "after_shown",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_restore_permission(self, request: HttpRequest) -> bool:
        return any(
            request.user.has_perm(
                f"{kind.model._meta.app_label}.change_{kind.model._meta.model_name}"
            )
            for kind in KINDS.values()
        )

    @admin.display(description="by", ordering="actor_name")
    def actor_shown(self, entry: AuditEntry) -> str:
        return entry.actor_name or f"({entry.source or 'code'})"

    @admin.display(description="changed")
    def changed_keys(self, entry: AuditEntry) -> str:
        return ", ".join(differences(entry)) or "-"

    @admin.display(description="changes")
    def differences(self, entry: AuditEntry) -> SafeString | str:
        keys = differences(entry)
        if not keys:
            return "-"
        before, after = entry.before or {}, entry.after or {}
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            (
                (
                    k,
                    pretty(before.get(k)) if k in before else "-",
                    pretty(after.get(k)) if k in after else "-",
                )
                for k in keys
            ),
        )
        return format_html(
            '<table class="audit-diff"><thead><tr><th>field</th><th>before</th><th>after</th>'
            "</tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="before")
    def before_shown(self, entry: AuditEntry) -> SafeString | str:
        return pretty(entry.before) if entry.before is not None else "-"

    @admin.display(description="after")
    def after_shown(self, entry: AuditEntry) -> SafeString | str:
        return pretty(entry.after) if entry.after is not None else "-"

    def get_urls(self) -> list:
        view = path(
            "<path:object_id>/restore/",
            self.admin_site.admin_view(self.restore_view),
            name="rules_auditentry_restore",
        )
        return [view, *super().get_urls()]

    def _restore(self, request: HttpRequest, entry: AuditEntry) -> bool:
        kind = next((k for k in KINDS.values() if k.audit_kind == entry.kind), None)
        opts = kind.model._meta if kind else None
        if opts is None or not request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}"):
            self.message_user(
                request, f"You may not change {entry.kind}s: nothing restored.", messages.ERROR
            )
            return False
        obj, problems = restore(entry, request.user)
        if problems:
            self.message_user(
                request,
                f"Audit entry #{entry.pk} was not restored: " + "; ".join(problems),
                messages.ERROR,
            )
            return False
        opts = type(obj)._meta
        self.message_user(
            request,
            format_html(
                '{} <a href="{}">{}</a> restored to the version of audit entry #{}.',
                entry.kind.capitalize(),
                reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]),
                str(obj),
                entry.pk,
            ),
            messages.SUCCESS,
        )
        return True

    @admin.action(description="Restore the selected version", permissions=["restore"])
    def restore_version(self, request: HttpRequest, queryset: QuerySet) -> None:
        entries = list(queryset[:2])
        if len(entries) != 1:
            self.message_user(
                request, "Select exactly one audit entry to restore.", messages.WARNING
            )
            return
        self._restore(request, entries[0])

    def restore_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        entry = get_object_or_404(AuditEntry, pk=object_id)
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:rules_auditentry_change", args=[entry.pk]))
        if not self.has_restore_permission(request):
            raise PermissionDenied
        self._restore(request, entry)
        return HttpResponseRedirect(reverse("admin:rules_auditentry_change", args=[entry.pk]))

    def render_change_form(self, request: HttpRequest, context: dict, *args: Any, **kwargs: Any):
        entry = context.get("original")
        context["can_restore"] = (
            entry is not None
            and version_of(entry) is not None
            and self.has_restore_permission(request)
        )
        return super().render_change_form(request, context, *args, **kwargs)


def differences(entry: AuditEntry) -> list[str]:
    before, after = entry.before or {}, entry.after or {}
    if entry.before is None or entry.after is None:
        return []
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
