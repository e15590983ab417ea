"""Settings of the worker processes the benchmarks start: ``notify.project.settings``
(DATABASE_URL, NOTIFY_BROKER_URL... from the environment, as the runner sets
them for its throwaway database) plus the ``bench-http`` channel, posting to
the local HTTP provider at ``NOTIFY_BENCH_HTTP_URL`` (``CONCURRENCY``:
``NOTIFY_BENCH_HTTP_CONCURRENCY`` if set, else the channel's default)."""

import os

from notify.project.settings import *  # noqa: F403
from notify.project.settings import LOGGING, NOTIFY

BENCH_HTTP_CHANNEL = {
    "BACKEND": "bench.http_peer.LocalHttpChannel",
    "OPTIONS": {"URL": os.environ.get("NOTIFY_BENCH_HTTP_URL", "http://127.0.0.1:9/deliver")},
}
if os.environ.get("NOTIFY_BENCH_HTTP_CONCURRENCY"):
    BENCH_HTTP_CHANNEL["CONCURRENCY"] = int(os.environ["NOTIFY_BENCH_HTTP_CONCURRENCY"])

NOTIFY = {**NOTIFY, "CHANNELS": {**NOTIFY["CHANNELS"], "bench-http": BENCH_HTTP_CHANNEL}}

# The bench runs quietly (NOTIFY_LOG_LEVEL=WARNING), but says when a Celery
# worker is ready: the runner waits for that line.
LOGGING = {
    **LOGGING,
    "loggers": {**LOGGING["loggers"], "celery.apps.worker": {"level": "INFO"}},
}
# Workers look for new work this often when idle (the default, 0.5 s, would
# be a good part of a short measurement).
NOTIFY["POLL_INTERVAL"] = 0.05
# The api workload sends thousands of requests a second with one key from one
# address: limits high enough never to refuse it, still applied (their cost
# is part of every request).
NOTIFY["API_RATE_LIMIT_PER_KEY"] = "10000000/m"
NOTIFY["API_RATE_LIMIT_PER_ADDRESS"] = "10000000/m"
