"""The core app's models: events in, preferences, the outbox, templates."""

from .events import ApiKey, Event
from .outbox import Delivery, DeliveryAttempt, Notification
from .preferences import (
    Category,
    CategoryPreference,
    ChannelPreference,
    ContactPoint,
    DeliveryMode,
    UserSettings,
)
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
    "Event",
    "MessageTemplate",
    "Notification",
    "UserSettings",
]
