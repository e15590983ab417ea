"""Admin for rules. Every save is validated by ``RuleForm``; every change, bulk
ones included, moves the rules revision so each process rebuilds its index."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import ngettext

from .forms import RuleForm
from .models import ConfigRevision, Rule


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    form = RuleForm
    list_display = (
        "name",
        "event_type",
        "category",
        "channel_list",
        "is_active",
        "priority",
        "updated_at",
    )
    list_filter = ("is_active", "category")
    search_fields = ("name", "event_type")
    list_select_related = ("category",)
    actions = ("activate", "deactivate")
    fieldsets = (
        (None, {"fields": ("name", "description", "is_active", "priority")}),
        ("When", {"fields": ("event_type", "condition")}),
        ("What and to whom", {"fields": ("category", "message", "recipients", "channels")}),
    )

    @admin.display(description="channels")
    def channel_list(self, rule: Rule) -> str:
        return ", ".join(rule.channels) if rule.channels else "(defaults)"

    def _set_active(self, request: HttpRequest, queryset: QuerySet, active: bool) -> None:
        # ``update`` sends no post_save, so the revision is bumped here.
        with transaction.atomic():
            count = queryset.exclude(is_active=active).update(
                is_active=active, updated_at=timezone.now()
            )
            if count:
                ConfigRevision.bump("rules")
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
