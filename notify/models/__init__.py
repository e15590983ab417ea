"""The core app's models: events in, preferences, the outbox, templates."""

from notify.models.events import ApiKey, Event, RuleError
from notify.models.outbox import Delivery, DeliveryAttempt, Digest, Notification, ProviderEvent
from notify.models.preferences import (
    Category,
    CategoryPreference,
    ChannelPreference,
    ContactPoint,
    DeliveryMode,
    UserSettings,
)
from notify.models.subscriptions import Subscription
from notify.models.suppression import Suppression
from notify.models.templates import EmailLayout, MessageTemplate
from notify.models.workflows import WorkflowBatchItem, WorkflowRun, WorkflowStepLog

__all__ = [
    "ApiKey",
    "Category",
    "CategoryPreference",
    "ChannelPreference",
    "ContactPoint",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryMode",
    "Digest",
    "EmailLayout",
    "Event",
    "MessageTemplate",
    "Notification",
    "ProviderEvent",
    "RuleError",
    "Subscription",
    "Suppression",
    "UserSettings",
    "WorkflowBatchItem",
    "WorkflowRun",
    "WorkflowStepLog",
]
