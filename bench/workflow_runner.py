"""A runner process for the workflows benchmark: ``python -m bench.workflow_runner``.

Loops ``advance_due_runs()`` (what a worker round does for runs) until
stopped; idle, it polls every 20 ms. Prints "runner ready" once Django is up.
"""

from __future__ import annotations

import os
import time

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    django.setup()
    from notify.workflows.runner import advance_due_runs

    print("runner ready", flush=True)
    while True:
        if not advance_due_runs().runs:
            time.sleep(0.02)


if __name__ == "__main__":
    main()
