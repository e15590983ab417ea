"""The in-app channel: "sending" writes the rendered item into the user's inbox.

The inbox lives in the pipeline's tables, which a channel must not import, so
the writer is named by dotted path (option ``STORE``) and resolved once.
"""

from __future__ import annotations

from typing import Any

from django.utils.module_loading import import_string

from .base import Channel, OutgoingMessage, SendResult


class InAppChannel(Channel):
    address_kind = None
    message_format = "inapp"
    provider_name = "inbox"
    accepted_options = frozenset({"STORE"})

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        self.store = import_string(options.get("STORE", "notify.inbox.store.store_inapp_message"))

    def send(self, message: OutgoingMessage) -> SendResult:
        self.store(message)
        return SendResult(
            provider=self.provider_name, message_id=str(message.extra.get("notification_id", ""))
        )
