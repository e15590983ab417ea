"""Settings for the worker, scheduler and server processes the scale-out tests start.

``notify.project.settings`` (DATABASE_URL, NOTIFY_BROKER_URL, NOTIFY_CELERY_QUEUE from
the environment as usual) plus:

* a ``counting`` channel posting to ``NOTIFY_TEST_PROVIDER_URL`` (the counting
  provider of ``tests.peers.counting_provider``), with
  ``NOTIFY_TEST_PROVIDER_TIMEOUT`` seconds per request and
  ``NOTIFY_TEST_KILL_ON`` (text that makes a worker kill itself);
* ``NOTIFY_TEST_OVERRIDES``: a JSON object merged into ``NOTIFY`` (short claim
  TTLs, small retry delays, relay intervals...).
"""

import json
import os

from notify.project.settings import *  # noqa: F403
from notify.project.settings import NOTIFY

NOTIFY = {
    **NOTIFY,
    "CHANNELS": {
        **NOTIFY["CHANNELS"],
        "counting": {
            "BACKEND": "tests.peers.counting_provider.CountingChannel",
            "OPTIONS": {
                "URL": os.environ.get("NOTIFY_TEST_PROVIDER_URL", "http://127.0.0.1:9/deliver"),
                "TIMEOUT": float(os.environ.get("NOTIFY_TEST_PROVIDER_TIMEOUT", "5")),
                "KILL_ON": os.environ.get("NOTIFY_TEST_KILL_ON", ""),
            },
        },
    },
    **json.loads(os.environ.get("NOTIFY_TEST_OVERRIDES", "{}")),
}
