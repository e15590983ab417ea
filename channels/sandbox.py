"""Sandbox providers: record what would have been sent, send nothing.

Records are appended as JSON lines to ``<SANDBOX_DIR>/outbox.jsonl`` so that a
worker process writes and the web process shows them (``/dev/outbox/``) with no
shared table. An exclusive ``flock`` keeps concurrent appends whole.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections import deque
from datetime import UTC, datetime
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from django.core.mail.backends.base import BaseEmailBackend

from .base import Channel, ChannelConfigurationError, OutgoingMessage, SendResult


def outbox_path(directory: str | None = None) -> Path:
    if directory is None:
        from django.conf import settings

        directory = settings.NOTIFY.get("SANDBOX_DIR") if hasattr(settings, "NOTIFY") else None
    if not directory:
        raise ChannelConfigurationError("Set NOTIFY['SANDBOX_DIR'] to use the sandbox providers.")
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return path / "outbox.jsonl"


def record(entry: dict[str, Any], directory: str | None = None) -> None:
    entry = {"at": datetime.now(UTC).isoformat(), **entry}
    line = (json.dumps(entry, default=str) + "\n").encode()
    with open(outbox_path(directory), "ab") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read(limit: int = 200, directory: str | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` records, newest first."""
    path = outbox_path(directory)
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as handle:
        lines = deque(handle, maxlen=limit)
    return [json.loads(line) for line in reversed(lines) if line.strip()]


class SandboxEmailBackend(BaseEmailBackend):
    """A Django email backend that records instead of sending."""

    def send_messages(self, email_messages):
        for message in email_messages:
            html = ""
            for content, mimetype in getattr(message, "alternatives", []):
                if mimetype == "text/html":
                    html = content
            record(
                {
                    "channel": "email",
                    "provider": "sandbox",
                    "to": list(message.to),
                    "from": message.from_email,
                    "subject": message.subject,
                    "text": message.body,
                    "html": html,
                    "headers": {k: str(v) for k, v in message.extra_headers.items()},
                }
            )
        return len(email_messages)


class SandboxChannel(Channel):
    """Stands in for any channel (SMS, chat, webhook) in the embedded default."""

    provider_name = "sandbox"
    accepted_options = frozenset({"ADDRESS_KIND", "FORMAT"})

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        self.address_kind = options.get("ADDRESS_KIND")
        self.message_format = options.get("FORMAT", "chat")

    def send(self, message: OutgoingMessage) -> SendResult:
        message_id = make_msgid(domain="sandbox.invalid")
        record(
            {
                "channel": self.alias,
                "provider": "sandbox",
                "message_id": message_id,
                **message.as_record(),
            }
        )
        return SendResult(provider=self.provider_name, message_id=message_id)
