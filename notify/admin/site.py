"""Admin for ops: events and the outbox as read-only records with a few safe
actions (process again, retry now, revoke), and the configuration ops edit
(categories, message templates, API keys, preferences)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import escape, format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.translation import ngettext

from notify.admin.dashboard import dashboard_urls
from notify.admin.file_templates import file_source, file_templates, sample_payload
from notify.admin.forms import ApiKeyCreateForm, CategoryForm, MessageTemplateForm, check_template
from notify.api.auth import forget_api_keys
from notify.fanout.pipeline import reprocess_events
from notify.models import (
    ApiKey,
    Category,
    CategoryPreference,
    ChannelPreference,
    ContactPoint,
    Delivery,
    DeliveryAttempt,
    Event,
    MessageTemplate,
    Notification,
    RuleError,
    UserSettings,
)
from notify.outbox.rows import retry_now
from notify.preferences.masking import can_see_personal_data, mask_address, mask_data
from rules.audit import AuditedAdminMixin  # categories and templates: audited

admin.site.site_header = "notify"
admin.site.site_title = "notify admin"
# The index links the delivery-health dashboard (notify.admin.dashboard).
admin.site.index_template = "admin_dashboard_index.html"

PRE_STYLE = "white-space: pre-wrap; max-height: 16em; overflow: auto; margin: 0; max-width: 48em"


def pre(value: Any) -> SafeString:
    """``value`` escaped (always, even if it claims to be safe HTML) in a <pre>."""
    return format_html('<pre style="{}">{}</pre>', PRE_STYLE, escape(str(value)))


def pretty_json(value: Any) -> SafeString:
    return pre(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str))


class PersonalDataMixin:
    """Fields shown to viewers with ``notify.view_personal_data`` and, in their
    place, masked twins for everyone else (``masked_fields``: field -> twin)."""

    masked_fields: dict[str, str] = {}

    def swap_masked(self, request: HttpRequest, names: Any) -> Any:
        if can_see_personal_data(request.user):
            return names
        swapped = [
            self.swap_masked(request, name)
            if isinstance(name, (list, tuple))
            else self.masked_fields.get(name, name)
            for name in names
        ]
        return type(names)(swapped)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.swap_masked(request, super().get_fields(request, obj))  # type: ignore[misc]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.swap_masked(request, super().get_readonly_fields(request, obj))  # type: ignore[misc]


def admin_changelist(model: type, **query: Any) -> str:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return f"{url}?{urlencode(query)}" if query else url


class ReadOnlyMixin:
    """Records, not configuration: viewable, never added, edited or deleted here."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def may_change(self, request: HttpRequest) -> bool:
        """Actions on records (retry, process again) need the model's change permission."""
        opts = self.model._meta
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")


class CappedInlineFormSet(BaseInlineFormSet):
    """An inline over a relation that can hold 100,000 rows: show the first few."""

    limit = 50

    def get_queryset(self) -> QuerySet:
        if not hasattr(self, "_capped"):
            self._capped = super().get_queryset()[: self.limit]
        return self._capped


# -- events ----------------------------------------------------------------------------


def delivery_summary(deliveries: Any) -> str:
    parts = []
    for delivery in deliveries:
        reason = f" ({delivery.skip_reason})" if delivery.skip_reason else ""
        parts.append(f"{delivery.channel}: {delivery.status}{reason}")
    return ", ".join(parts) or "-"


class NotificationInline(ReadOnlyMixin, admin.TabularInline):
    model = Notification
    formset = CappedInlineFormSet
    fields = ("user", "rule", "category", "created_at", "inbox_at", "read_at", "deliveries")
    readonly_fields = fields
    show_change_link = True
    extra = 0
    verbose_name_plural = f"notifications (the first {CappedInlineFormSet.limit})"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .select_related("user", "rule", "category")
            .prefetch_related("deliveries")
            .order_by("pk")
        )

    @admin.display(description="deliveries")
    def deliveries(self, notification: Notification) -> str:
        return delivery_summary(notification.deliveries.all())


class RuleErrorInline(ReadOnlyMixin, admin.TabularInline):
    """Each rule that failed for the event, and why (the other rules went on)."""

    model = RuleError
    fields = ("rule", "rule_name", "kind", "message", "created_at")
    readonly_fields = fields
    extra = 0
    verbose_name_plural = "rules that failed for this event"


@admin.register(RuleError)
class RuleErrorAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("created_at", "event", "rule_name", "kind", "message")
    list_filter = ("kind", "created_at")
    list_select_related = ("event",)
    show_full_result_count = False


@admin.register(Event)
class EventAdmin(PersonalDataMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("id", "type", "source", "status", "received_at", "processed_at")
    list_filter = ("status", "source", "type")
    search_fields = ("type", "idempotency_key")
    show_full_result_count = False
    actions = ("process_again",)
    inlines = (RuleErrorInline, NotificationInline)
    fields = (
        ("type", "source", "status"),
        ("received_at", "processed_at", "claimed_until"),
        ("attempts", "error"),
        "tags",
        ("actor", "api_key", "object_ref"),
        ("idempotency_scope", "idempotency_key", "request_hash"),
        "explicit_recipients",
        "payload_json",
        "outcome",
    )
    readonly_fields = flatten(fields)
    masked_fields = {"payload_json": "payload_masked", "explicit_recipients": "recipients_masked"}

    def has_process_permission(self, request: HttpRequest) -> bool:
        return self.may_change(request)

    @admin.display(description="payload")
    def payload_json(self, event: Event) -> SafeString:
        return pretty_json(event.payload)

    @admin.display(description="payload (masked)")
    def payload_masked(self, event: Event) -> SafeString:
        return pretty_json(mask_data(event.payload))

    @admin.display(description="recipients")
    def explicit_recipients(self, event: Event) -> SafeString:
        return pretty_json(event.recipients)

    @admin.display(description="recipients (masked)")
    def recipients_masked(self, event: Event) -> SafeString:
        return pretty_json(mask_data(event.recipients))

    @admin.display(description="fan-out")
    def outcome(self, event: Event) -> SafeString:
        count = event.notifications.count()
        statuses = (
            Delivery.objects.filter(notification__event=event)
            .values_list("status")
            .annotate(n=Count("pk"))
            .order_by("status")
        )
        return format_html(
            '{} notification(s): <a href="{}">list them</a>; deliveries: <a href="{}">{}</a>',
            count,
            admin_changelist(Notification, event__id__exact=event.pk),
            admin_changelist(Delivery, event=event.pk),
            ", ".join(f"{n} {status}" for status, n in statuses) or "none",
        )

    @admin.action(description="Process again", permissions=["process"])
    def process_again(self, request: HttpRequest, queryset: QuerySet) -> None:
        selected = list(queryset.values_list("pk", flat=True))
        count = reprocess_events(selected)
        message = ngettext(
            "%(count)d event queued for processing again.",
            "%(count)d events queued for processing again.",
            count,
        ) % {"count": count}
        if count < len(selected):
            message += f" {len(selected) - count} left alone: a worker is processing them now."
        self.message_user(request, message, messages.SUCCESS)


# -- the outbox ------------------------------------------------------------------------


class DeliveryInline(ReadOnlyMixin, admin.TabularInline):
    model = Delivery
    fields = ("channel", "status", "skip_reason", "attempts", "provider", "error_code", "sent_at")
    readonly_fields = fields
    show_change_link = True
    extra = 0


@admin.register(Notification)
class NotificationAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("id", "user", "category", "event", "inbox_at", "read_at")
    list_filter = ("category",)
    list_select_related = ("user", "category", "event")
    search_fields = ("title", "=event__idempotency_key")
    show_full_result_count = False
    inlines = (DeliveryInline,)


class EventFilter(admin.SimpleListFilter):
    """``?event=<id>``: the deliveries of one event (linked from the event page)."""

    title = "event"
    parameter_name = "event"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        return [(value, f"event #{value}")] if value and value.isdigit() else []

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(notification__event_id=int(value))
        return queryset


class DeliveryAttemptInline(PersonalDataMixin, ReadOnlyMixin, admin.TabularInline):
    model = DeliveryAttempt
    fields = (
        "number",
        "started_at",
        "finished_at",
        "provider",
        "outcome",
        "error_code",
        "error_message",
        "retry_at",
        "what_was_sent",
        "answer",
    )
    readonly_fields = fields
    masked_fields = {"what_was_sent": "what_was_sent_masked", "answer": "answer_masked"}
    extra = 0
    ordering = ("number",)

    @admin.display(description="sent")
    def what_was_sent(self, attempt: DeliveryAttempt, masked: bool = False) -> SafeString | str:
        sent = attempt.sent if isinstance(attempt.sent, dict) else {}
        if masked:  # dry-run records too: addresses masked, no working links
            sent = {**mask_data(sent), "to": mask_address(str(sent.get("to") or ""))}
        rows = [(key, sent.get(key)) for key in ("to", "subject", "text", "html") if sent.get(key)]
        if not rows:
            return "-"
        return format_html_join(
            "", "<div><strong>{}</strong>{}</div>", ((k, pre(v)) for k, v in rows)
        )

    @admin.display(description="sent (masked)")
    def what_was_sent_masked(self, attempt: DeliveryAttempt) -> SafeString | str:
        return self.what_was_sent(attempt, masked=True)

    @admin.display(description="provider's answer (masked)")
    def answer_masked(self, attempt: DeliveryAttempt) -> SafeString | str:
        return pretty_json(mask_data(attempt.response)) if attempt.response else "-"

    @admin.display(description="provider's answer")
    def answer(self, attempt: DeliveryAttempt) -> SafeString | str:
        return pretty_json(attempt.response) if attempt.response else "-"


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "user",
        "channel",
        "status",
        "skip_reason",
        "attempts",
        "provider",
        "error_code",
        "next_attempt_at",
        "sent_at",
    )
    list_filter = (EventFilter, "status", "channel", "provider", "skip_reason")
    list_select_related = ("notification__user",)
    search_fields = ("=provider_message_id", "error_message")
    show_full_result_count = False
    actions = ("retry",)
    inlines = (DeliveryAttemptInline,)
    fields = (
        ("notification", "event", "user"),
        ("channel", "status", "skip_reason"),
        ("attempts", "next_attempt_at", "claimed_until"),
        ("provider", "provider_message_id"),
        ("error_code", "error_message"),
        ("created_at", "sent_at", "delivered_at", "updated_at"),
    )
    readonly_fields = flatten(fields)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return self.may_change(request)

    # The delivery-health dashboard lives under this admin (same permission).
    change_list_template = "admin_dashboard_changelist.html"

    def get_urls(self) -> list:
        return dashboard_urls(self) + super().get_urls()

    @admin.display(description="user", ordering="notification__user_id")
    def user(self, delivery: Delivery) -> Any:
        return delivery.notification.user

    @admin.display(description="event")
    def event(self, delivery: Delivery) -> SafeString:
        event_id = delivery.notification.event_id
        url = reverse("admin:notify_event_change", args=[event_id])
        return format_html('<a href="{}">event #{}</a>', url, event_id)

    @admin.action(description="Retry now", permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet) -> None:
        selected = list(queryset.values_list("pk", flat=True))
        count = retry_now(selected)
        message = ngettext(
            "%(count)d delivery is due again.", "%(count)d deliveries are due again.", count
        ) % {"count": count}
        if count < len(selected):
            message += (
                f" {len(selected) - count} left alone: only failed or dead deliveries are retried."
            )
        self.message_user(request, message, messages.SUCCESS if count else messages.WARNING)


# -- configuration ---------------------------------------------------------------------


@admin.register(Category)
class CategoryAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = CategoryForm
    list_display = ("key", "name", "critical", "opt_in", "default_mode")
    list_filter = ("critical", "opt_in", "default_mode")
    search_fields = ("key", "name")
    prepopulated_fields = {"key": ("name",)}


@admin.register(MessageTemplate)
class MessageTemplateAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = MessageTemplateForm
    list_display = ("message", "part", "locale", "updated_at")
    list_filter = ("part", "locale")
    search_fields = ("message", "body")
    fields = ("message", "part", "locale", "body", "sample_payload", "preview")
    readonly_fields = ("preview",)
    change_list_template = "admin_messagetemplate_changelist.html"

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        """The overrides, then the shipped file templates (read-only), each with
        "Override" (or a link to the override that replaces it)."""
        overrides = {
            (m, p, loc): pk
            for pk, m, p, loc in MessageTemplate.objects.values_list(
                "pk", "message", "part", "locale"
            )
        }
        add = reverse("admin:notify_messagetemplate_add")
        rows = []
        for t in file_templates():
            pk = overrides.get((t.message, t.part, t.locale))
            rows.append(
                {
                    "message": t.message,
                    "part": t.part,
                    "locale": t.locale,
                    "relative": t.relative,
                    "source": t.path.read_text(encoding="utf-8"),
                    "add_url": f"{add}?{urlencode({'message': t.message, 'part': t.part, 'locale': t.locale})}",
                    "override_url": reverse("admin:notify_messagetemplate_change", args=[pk])
                    if pk
                    else "",
                }
            )
        context = {**(extra_context or {}), "file_templates": rows}
        return super().changelist_view(request, extra_context=context)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        """``?message=…&part=…&locale=…`` (the "Override" link): the body starts
        as the shipped file's text."""
        initial = super().get_changeform_initial_data(request)
        source = file_source(
            str(initial.get("message", "")),
            str(initial.get("part", "")),
            str(initial.get("locale", "")),
        )
        if source is not None and "body" not in initial:
            initial["body"] = source
            initial["sample_payload"] = sample_payload(
                str(initial["message"]), source, timezone.now()
            )
        return initial

    class Media:
        js = ("rules/live-preview.js",)  # the preview follows the body while it is edited

    @admin.display(description="preview")
    def preview(self, template: MessageTemplate) -> SafeString:
        """The template rendered with the sample payload, in a region that
        ``live-preview.js`` refreshes from ``preview_view`` while the form is edited."""
        if template.pk is None and not template.body:
            inner: SafeString | str = "Type a body to see it rendered with the sample payload."
        else:
            inner = template_preview(template.part, template.body, template.sample_payload or {})
        return format_html(
            '<div id="template-preview" data-live-preview="{}" data-form="messagetemplate_form" '
            'data-method="post" aria-live="polite">{}</div>',
            reverse("admin:notify_messagetemplate_preview"),
            inner,
        )

    def get_urls(self) -> list:
        view = path(
            "preview/",
            self.admin_site.admin_view(self.preview_view),
            name="notify_messagetemplate_preview",
        )
        return [view, *super().get_urls()]

    def preview_view(self, request: HttpRequest) -> HttpResponse:
        """POST the form as it is (part, body, sample payload): the preview,
        nothing saved. For the add and change forms' live preview."""
        if not (self.has_add_permission(request) or self.has_change_permission(request)):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        part, body = request.POST.get("part", ""), request.POST.get("body", "")
        try:
            sample = json.loads(request.POST.get("sample_payload") or "{}")
        except ValueError as exc:
            sample, inner = None, format_html('<p class="errornote">Sample payload: {}</p>', exc)
        if sample is not None and not isinstance(sample, dict):
            sample, inner = (
                None,
                format_html(
                    '<p class="errornote">{}</p>', "The sample payload must be a JSON object."
                ),
            )
        if sample is not None:
            if part not in MessageTemplate.Part.values:
                inner = format_html("<p>{}</p>", "Choose a part to see the preview.")
            else:
                inner = template_preview(part, body, sample)
        return HttpResponse(format_html('<div id="template-preview">{}</div>', inner))


def template_preview(part: str, body: str, sample: dict[str, Any]) -> SafeString:
    """A template part rendered for ops: the text, and HTML in a sandboxed frame;
    or the save-time error."""
    try:
        rendered = check_template(part, body, sample)
    except ValidationError as exc:
        return format_html('<p class="errornote">{}</p>', " ".join(exc.messages))
    out = pre(rendered)
    if part.endswith(".html"):
        # srcdoc is attribute-escaped; sandbox="" runs no script and no form.
        out += format_html(
            '<iframe sandbox="" srcdoc="{}" title="HTML preview" '
            'style="width: 100%; max-width: 48em; height: 24em; border: 1px solid #ccc; '
            'background: #fff"></iframe>',
            escape(str(rendered)),
        )
    return out


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "=prefix")
    actions = ("revoke",)
    shown_fields = ("name", "prefix", "created_at", "last_used_at", "revoked_at")

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        return ("name",) if obj is None else self.shown_fields

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple:
        return () if obj is None else self.shown_fields[1:]

    def get_form(self, request: HttpRequest, obj: ApiKey | None = None, **kwargs: Any):
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, **kwargs)

    def save_form(self, request: HttpRequest, form: Any, change: bool) -> ApiKey:
        if change:
            return super().save_form(request, form, change)
        unsaved = form.save(commit=False)  # also readies form.save_m2m for save_related
        key, token = ApiKey.issue(unsaved.name)
        messages.success(
            request,
            f"API key '{key.name}' created. Its token is {token} — copy it now, "
            "it is not shown again.",
        )
        return key

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:  # a new key was saved by ApiKey.issue in save_form
            super().save_model(request, obj, form, change)

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        forget_api_keys()  # refused at once here; other processes within API_KEY_CACHE_SECONDS
        self.message_user(
            request,
            ngettext("%(count)d API key revoked.", "%(count)d API keys revoked.", count)
            % {"count": count},
            messages.SUCCESS,
        )


# -- preferences -----------------------------------------------------------------------


@admin.register(UserSettings)
class UserSettingsAdmin(admin.ModelAdmin):
    list_display = ("user", "timezone", "locale", "quiet_start", "quiet_end", "paused_until")
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email")
    raw_id_fields = ("user",)


@admin.register(ContactPoint)
class ContactPointAdmin(admin.ModelAdmin):
    list_display = ("user", "kind", "address", "verified_at", "is_primary")
    list_filter = ("kind", "is_primary")
    list_select_related = ("user",)
    search_fields = ("address", "user__username")
    raw_id_fields = ("user",)


@admin.register(CategoryPreference)
class CategoryPreferenceAdmin(admin.ModelAdmin):
    list_display = ("user", "category", "mode")
    list_filter = ("category", "mode")
    list_select_related = ("user", "category")
    search_fields = ("user__username",)
    raw_id_fields = ("user",)


@admin.register(ChannelPreference)
class ChannelPreferenceAdmin(admin.ModelAdmin):
    list_display = ("user", "category", "channel", "enabled")
    list_filter = ("category", "channel", "enabled")
    list_select_related = ("user", "category")
    search_fields = ("user__username",)
    raw_id_fields = ("user",)


# -- suppressions and provider reports ---------------------------------------------------

from django import forms  # noqa: E402 - this section was appended on its own

from notify.models import ProviderEvent, Suppression  # noqa: E402
from notify.models.preferences import ContactPoint as _ContactPoint  # noqa: E402
from notify.preferences.suppressions import lift, normalise  # noqa: E402


class SuppressionAddForm(forms.ModelForm):
    """Ops add an address by hand (reason "added by ops"); one active row per address."""

    kind = forms.ChoiceField(choices=_ContactPoint.Kind.choices)

    class Meta:
        model = Suppression
        fields = ("kind", "address", "detail")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        kind, address = data.get("kind"), data.get("address")
        if kind and address:
            data["address"] = normalise(kind, address)
            if Suppression.objects.filter(
                kind=kind, address=data["address"], lifted_at__isnull=True
            ).exists():
                self.add_error("address", "This address is already suppressed.")
        return data


class ActiveFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "active"), ("lifted", "lifted")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "active":
            return queryset.filter(lifted_at__isnull=True)
        if self.value() == "lifted":
            return queryset.filter(lifted_at__isnull=False)
        return queryset


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    """The suppression list: bounces and complaints from ESP webhooks, SMS STOP, and
    addresses ops add. Rows are history: lifted, never edited or deleted."""

    list_display = ("address", "kind", "reason", "source", "created_at", "lifted_at", "lifted_by")
    list_filter = (ActiveFilter, "kind", "reason", "source")
    list_select_related = ("lifted_by",)
    search_fields = ("address",)
    show_full_result_count = False
    actions = ("lift_selected",)
    shown_fields = (
        "kind",
        "address",
        "reason",
        "source",
        "detail",
        "created_at",
        "lifted_at",
        "lifted_by",
        "lift_reason",
    )

    def get_fields(self, request: HttpRequest, obj: Suppression | None = None) -> tuple[str, ...]:
        return ("kind", "address", "detail") if obj is None else self.shown_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Suppression | None = None) -> tuple:
        return () if obj is None else self.shown_fields

    def get_form(self, request: HttpRequest, obj: Suppression | None = None, **kwargs: Any):
        if obj is None:
            kwargs["form"] = SuppressionAddForm
        return super().get_form(request, obj, **kwargs)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Suppression, form: Any, change: bool) -> None:
        if not change:
            obj.reason = Suppression.Reason.MANUAL
            obj.source = "admin"
            obj.address = normalise(obj.kind, obj.address)
        super().save_model(request, obj, form, change)

    @admin.action(description="Lift suppression", permissions=["change"])
    def lift_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = 0
        for kind, address in queryset.filter(lifted_at__isnull=True).values_list("kind", "address"):
            count += lift(
                kind, address, by=request.user, reason=f"lifted in admin by {request.user}"
            )
        self.message_user(
            request,
            ngettext(
                "%(count)d suppression lifted: sending to it is allowed again.",
                "%(count)d suppressions lifted: sending to them is allowed again.",
                count,
            )
            % {"count": count},
            messages.SUCCESS if count else messages.WARNING,
        )


@admin.register(ProviderEvent)
class ProviderEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Provider status reports (webhooks), as received."""

    list_display = (
        "received_at",
        "provider",
        "event_type",
        "provider_message_id",
        "delivery_link",
        "error_code",
    )
    list_filter = ("provider", "event_type")
    search_fields = ("=provider_message_id",)
    show_full_result_count = False
    fields = (
        ("provider", "event_type", "received_at"),
        ("provider_message_id", "delivery_link"),
        ("error_code", "detail"),
        "payload_shown",
    )
    readonly_fields = flatten(fields)

    @admin.display(description="delivery", ordering="delivery_id")
    def delivery_link(self, event: ProviderEvent) -> SafeString | str:
        if event.delivery_id is None:
            return "-"
        url = reverse("admin:notify_delivery_change", args=[event.delivery_id])
        return format_html('<a href="{}">delivery #{}</a>', url, event.delivery_id)

    @admin.display(description="payload")
    def payload_shown(self, event: ProviderEvent) -> SafeString:
        return pretty_json(event.payload)
