"""The in-app channel: "sending" writes the rendered item into the user's inbox.

The inbox lives in the pipeline's tables, which a channel must not import, so
the writers are named by dotted path (options ``STORE`` for one item and
``STORE_MANY`` for a batch) and resolved once.

Opened (``with channel:`` or ``open()``), the channel queues what it is sent
and writes the queue with one ``STORE_MANY`` call at ``flush()`` (or at
``close()``): a worker's batch of inbox items is one statement, not one per
item. Not opened, each ``send`` writes at once.
"""

from __future__ import annotations

import logging
from typing import Any

from django.utils.module_loading import import_string

from .base import Channel, OutgoingMessage, SendResult, TransientError

log = logging.getLogger("channels.inapp")


class InAppChannel(Channel):
    address_kind = None
    message_format = "inapp"
    provider_name = "inbox"
    accepted_options = frozenset({"STORE", "STORE_MANY"})
    queues_sends = True

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        self.store = import_string(options.get("STORE", "notify.inbox.store.store_inapp_message"))
        self.store_many = import_string(
            options.get("STORE_MANY", "notify.inbox.store.store_inapp_messages")
        )
        self.queue: list[OutgoingMessage] | None = None

    def open(self) -> None:
        if self.queue is None:
            self.queue = []

    def send(self, message: OutgoingMessage) -> SendResult:
        if self.queue is not None:
            self.queue.append(message)
        else:
            self.store(message)
        return SendResult(
            provider=self.provider_name, message_id=str(message.extra.get("notification_id", ""))
        )

    def flush(self) -> None:
        if not self.queue:
            return
        queued, self.queue = self.queue, []
        try:
            self.store_many(queued)
        except Exception as exc:
            raise TransientError(
                f"{len(queued)} inbox item(s) not written: {type(exc).__name__}: {exc}",
                provider=self.provider_name,
            ) from exc

    def close(self) -> None:
        try:
            self.flush()
        except TransientError:
            # close() must not raise; a sender that records outcomes flushes first.
            log.exception("in-app items queued but never flushed could not be written")
        self.queue = None
