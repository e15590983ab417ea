"""An open-loop HTTP load generator: N requests at a fixed rate, latency of each.

Request ``i`` is due at ``start + i / rate`` whether or not the earlier ones
were answered (open loop: a slow server does not slow the load down, so its
queueing shows in the figures instead of hiding, "coordinated omission").
Each latency is measured from when the request was due to when its whole
answer was read. Requests go over a few keep-alive HTTP/1.1 connections, as a
client's connection pool would send them; a request waits for a free one.

Runs in a process of its own (``measure.isolated`` forks it) with asyncio and
raw sockets: no HTTP library, so the client costs little next to the server.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Callable
from typing import Any


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, request: bytes) -> int:
        """Send one request, read the whole answer; return its status."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            await self.reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        return status


def percentile(values: list[float], share: float) -> float:
    """The value below which ``share`` of ``values`` fall (nearest rank)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1))
    return ordered[rank]


async def _run(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    count: int,
    rate: float,
    connections: int,
) -> dict[str, Any]:
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        free.put_nowait(Connection(*await asyncio.open_connection(host, port)))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0

    async def one(number: int, due: float) -> None:
        nonlocal errors
        connection = await free.get()
        try:
            status = await connection.exchange(make_request(number))
            latencies.append(time.perf_counter() - due)
            statuses[status] = statuses.get(status, 0) + 1
            free.put_nowait(connection)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            connection.writer.close()
            free.put_nowait(Connection(*await asyncio.open_connection(host, port)))

    started = time.perf_counter()
    tasks = []
    for number in range(count):
        due = started + number / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(number, due)))
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - started
    while not free.empty():
        free.get_nowait().writer.close()
    ms = [latency * 1000 for latency in latencies]
    return {
        "requests": count,
        "rate": rate,
        "achieved_rate": count / seconds,
        "errors": errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": percentile(ms, 0.50),
        "p90_ms": percentile(ms, 0.90),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms),
        "mean_ms": statistics.fmean(ms),
    }


def run_load(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    count: int,
    rate: float = 200.0,
    connections: int = 8,
) -> dict[str, Any]:
    """Send ``count`` requests at ``rate`` per second; return latency percentiles (ms)."""
    return asyncio.run(_run(host, port, make_request, count, rate, connections))


async def _run_closed(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    count: int,
    connections: int,
    keep_alive: bool,
) -> dict[str, Any]:
    numbers = iter(range(count))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0

    async def client() -> None:
        nonlocal errors
        connection = None
        for number in numbers:
            if connection is None:
                connection = Connection(*await asyncio.open_connection(host, port))
            started = time.perf_counter()
            try:
                status = await connection.exchange(make_request(number))
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                connection.writer.close()
                connection = None
                continue
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
            if not keep_alive:
                connection.writer.close()
                connection = None
        if connection is not None:
            connection.writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    seconds = time.perf_counter() - started
    ms = [latency * 1000 for latency in latencies] or [0.0]
    return {
        "requests": count,
        "connections": connections,
        "keep_alive": keep_alive,
        "seconds": seconds,
        "achieved_rate": count / seconds,
        "errors": errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": percentile(ms, 0.50),
        "p99_ms": percentile(ms, 0.99),
    }


def run_closed(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    count: int,
    connections: int = 8,
    keep_alive: bool = True,
) -> dict[str, Any]:
    """Closed loop: ``connections`` clients each send their next request as soon
    as the last is answered, ``count`` in all: the most the server does.
    Without ``keep_alive`` each request opens a connection of its own."""
    return asyncio.run(_run_closed(host, port, make_request, count, connections, keep_alive))


def http_request(
    method: str, path: str, host: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    if headers and "Connection" in headers:
        lines.pop()
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
