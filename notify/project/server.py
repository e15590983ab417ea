"""``notify run``: the embedded default in one process.

A real ASGI server (uvicorn, which also serves the live inbox's long-lived
connections), the in-process worker pool and the scheduler, started together
and stopped together on Ctrl-C or SIGTERM.

Client addresses: Django sees the socket's peer as ``REMOTE_ADDR``, and that is
what ``/metrics``, ``/readyz`` and the rate limits trust. uvicorn would replace
it with ``X-Forwarded-For`` from 127.0.0.1 by default, so that anything able to
reach the port through a local proxy could claim any address; here forwarded
headers are honoured only from the proxies listed in
``NOTIFY["TRUSTED_PROXIES"]`` (addresses or networks; empty by default:
forwarded headers are never trusted).
"""

from __future__ import annotations

import logging

import uvicorn

from notify import conf
from notify.runtime.worker import WorkerPool
from notify.scheduling.scheduler import SchedulerService

log = logging.getLogger("notify.project.server")


def serve(
    host: str = "127.0.0.1", port: int = 8000, *, workers: bool = True, scheduler: bool = True
) -> None:
    pool = WorkerPool() if workers else None
    service = SchedulerService() if scheduler else None
    if pool:
        pool.start()
    if service:
        service.start()
    config = uvicorn_config(host, port)
    try:
        uvicorn.Server(config).run()  # returns on SIGINT / SIGTERM
    finally:
        if pool:
            pool.stop()
        if service:
            service.stop()
        log.info("stopped")


def trusted_proxies() -> list[str]:
    """``NOTIFY["TRUSTED_PROXIES"]``: the proxies whose ``X-Forwarded-For`` counts."""
    proxies = conf.get("TRUSTED_PROXIES") or []
    return [proxies] if isinstance(proxies, str) else list(proxies)


def uvicorn_config(host: str, port: int) -> uvicorn.Config:
    proxies = trusted_proxies()
    return uvicorn.Config(
        "notify.project.asgi:application",
        host=host,
        port=port,
        lifespan="off",
        # None: uvicorn's loggers keep LOGGING's level (NOTIFY_LOG_LEVEL) instead of
        # being forced to INFO, so at WARNING no access line is even formatted
        # (one per request: 4 % of a trigger's CPU under load, BENCHMARKS.md).
        log_level=None,
        log_config=None,  # uvicorn's records go through LOGGING: one format, redacted
        # One line per request, so a newcomer sees their own clicks; unsubscribe
        # tokens in paths are redacted like every record (notify.logs).
        access_log=True,
        timeout_graceful_shutdown=5,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or [],
    )
