"""Workflow runs in admin: each run's history (the steps it took, what each
decided and why, the deliveries a channel step wrote), read-only; open runs
can be cancelled (the "change" permission on runs)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import ngettext

from notify.admin.site import ReadOnlyMixin
from notify.models import WorkflowRun, WorkflowStepLog
from notify.outbox.runs import cancel_runs

CANCELLED_BY_OPS = "cancelled in admin"


class StepLogInline(admin.TabularInline):
    model = WorkflowStepLog
    extra = 0
    can_delete = False
    fields = ("step", "kind", "decision", "reason", "at", "until", "deliveries_shown")
    readonly_fields = fields
    ordering = ("at", "id")
    verbose_name = "step taken"
    verbose_name_plural = "History"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="step")
    def step(self, entry: WorkflowStepLog) -> int:
        return entry.position + 1

    @admin.display(description="deliveries")
    def deliveries_shown(self, entry: WorkflowStepLog) -> str:
        return ", ".join(f"{c}: {s}" for c, s in entry.deliveries) or "—"


@admin.register(WorkflowRun)
class WorkflowRunAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("id", "rule", "user", "event_link", "state", "next_step", "due_at", "batch")
    list_filter = ("state", "rule")
    list_select_related = ("rule", "user")
    search_fields = ("=id", "=event__id", "user__username", "batch_key")
    date_hierarchy = "created_at"
    inlines = (StepLogInline,)
    actions = ("cancel",)
    fields = (
        "rule",
        "user",
        "event_link",
        "batch",
        "state",
        "reason",
        "next_step",
        "due_at",
        "claimed_until",
        "attempts",
        "notification_link",
        "created_at",
        "finished_at",
    )
    readonly_fields = fields

    @admin.display(description="event")
    def event_link(self, run: WorkflowRun) -> str:
        url = reverse("admin:notify_event_change", args=[run.event_id])
        return format_html('<a href="{}">#{}</a>', url, run.event_id)

    @admin.display(description="notification")
    def notification_link(self, run: WorkflowRun) -> str:
        if not run.notification_id:
            return "—"
        url = reverse("admin:notify_notification_change", args=[run.notification_id])
        return format_html('<a href="{}">#{}</a>', url, run.notification_id)

    @admin.display(description="next step")
    def next_step(self, run: WorkflowRun) -> str:
        return str(run.step + 1) if run.state in WorkflowRun.OPEN else "—"

    @admin.display(description="batch")
    def batch(self, run: WorkflowRun) -> str:
        if not run.batch_key:
            return "—"
        items = run.items.count()
        events = format_html_join(
            ", ", "#{}", ((pk,) for pk in run.items.values_list("event_id", flat=True)[:20])
        )
        return format_html(
            "{} ({} event{}{}): {}",
            run.batch_key,
            items,
            "s" if items != 1 else "",
            ", collecting" if run.collecting else "",
            events,
        )

    @admin.action(description="Cancel the selected runs (nothing more is sent)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[WorkflowRun]) -> None:
        if not self.may_change(request):
            self.message_user(request, "You may not cancel runs.", messages.ERROR)
            return
        stopped = cancel_runs(
            Q(pk__in=list(queryset.values_list("pk", flat=True))), CANCELLED_BY_OPS, timezone.now()
        )
        self.message_user(
            request, ngettext("%d run cancelled.", "%d runs cancelled.", stopped) % stopped
        )
