"""A local HTTP provider that accepts every POST and counts, in a process of its own.

Like ``smtp_peer``: the provider must not be what is measured, so it runs in
a forked process, on asyncio (keep-alive, one write per answer: no Nagle
stalls), and answers ``200 {"ok": true}`` to anything. ``LocalHttpChannel``
is the channel the delivery workload sends through: the shared HTTP webhook
base (``channels.http``: one pooled ``requests`` session per batch, the
``X-Notify-Delivery`` header, the same error classification as every webhook
channel) with a fixed URL instead of a contact point, so every user can
receive it.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from bench.forked_peer import ForkedPeer
from channels.base import OutgoingMessage
from channels.http import HTTP_OPTIONS, HttpWebhookChannel

ANSWER = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
)


async def _handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: Any, latency: float = 0.0
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            if latency:  # a provider taking its time (the inflight workload)
                await asyncio.sleep(latency)
            with count.get_lock():
                count.value += 1
            writer.write(ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


def _serve(port: int, count: Any, ready: Any, stop: Any, latency: float = 0.0) -> None:
    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: _handle(r, w, count, latency), "127.0.0.1", port, backlog=512
        )
        ready.set()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, stop.wait)
        server.close()

    asyncio.run(main())


class HttpPeer(ForkedPeer):
    """``start()`` it, POST to ``url``, read ``requests``, ``stop()``."""

    kind = "HTTP"

    def __init__(self, latency: float = 0.0) -> None:
        super().__init__(functools.partial(_serve, latency=latency), "requests")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/deliver"

    @property
    def requests(self) -> int:
        return self.count


class LocalHttpChannel(HttpWebhookChannel):
    """POST ``{"id", "subject", "text"}`` to ``OPTIONS["URL"]`` (the local peer)."""

    address_kind = None
    message_format = "chat"
    provider_name = "local-http"
    accepted_options = HTTP_OPTIONS | {"URL"}

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **{"ALLOW_HTTP": True, "ALLOWED_HOSTS": ["127.0.0.1"], **options})
        self.url = options.get("URL") or ""

    def target_url(self, message: OutgoingMessage) -> str:
        return self.url_policy.check(self.url, self.provider_name)

    def build_payload(self, message: OutgoingMessage) -> dict[str, Any]:
        return {"id": message.delivery_id, "subject": message.subject, "text": message.text}
