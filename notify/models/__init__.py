"""The core app's models: events in, preferences, the outbox, templates."""

from .events import ApiKey, Event
from .outbox import Delivery, DeliveryAttempt, Digest, Notification, ProviderEvent
from .preferences import (
    Category,
    CategoryPreference,
    ChannelPreference,
    ContactPoint,
    DeliveryMode,
    UserSettings,
)
from .subscriptions import Subscription
from .suppression import Suppression
from .templates import MessageTemplate

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
    "Event",
    "MessageTemplate",
    "Notification",
    "ProviderEvent",
    "Subscription",
    "Suppression",
    "UserSettings",
]
