"""The workload registry: each workload is a few small functions over a context.

A workload module builds a ``Workload`` and passes it to ``register``:

* ``setup(ctx)`` seeds what every run needs (untimed, once per database) and
  returns a state object;
* ``run(ctx, state)`` measures once and returns a dict of figures: numbers,
  nested dicts of numbers, an optional ``"baseline"`` dict (the same work done
  the plainest way, measured in the same run) and an optional ``"ratio"``
  (workload time / baseline time);
* ``teardown(state)`` stops whatever ``setup`` started.

The runner calls ``run`` ``--runs`` times and reports the median of every
number. Modules are named in ``WORKLOAD_MODULES`` and imported on demand, so
the command can list the names without loading Django models.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# name -> module that registers it; the order is the order they run in.
WORKLOAD_MODULES: dict[str, str] = {
    "fanout": "bench.fanout",
    "delivery": "bench.delivery",
    "inflight": "bench.inflight",
    "digest": "bench.digest",
    "rules": "bench.rules",
    "api": "bench.api",
    "inapp": "bench.inapp",
    "workflows": "bench.workflows",
}


@dataclass(frozen=True, slots=True)
class Figure:
    """One line of the printed table: a dotted path into a run's figures."""

    label: str
    key: str
    unit: str = ""
    baseline: str | None = None  # dotted path of the baseline figure to print beside it


@dataclass(slots=True)
class Context:
    """What a workload knows about the run it is part of."""

    database: str  # "sqlite" or "postgres"
    recipients: int
    emails: int
    runs: int
    profile: str | None = None
    run_number: int = 0

    def say(self, message: str) -> None:
        """Progress, to stderr: stdout carries the report (or the JSON)."""
        print(f"[bench {self.database}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    title: str
    run: Callable[[Context, Any], dict[str, Any]]
    setup: Callable[[Context], Any] = field(default=lambda ctx: None)
    teardown: Callable[[Any], None] = field(default=lambda state: None)
    figures: tuple[Figure, ...] = ()


WORKLOADS: dict[str, Workload] = {}


def register(workload: Workload) -> Workload:
    if workload.name not in WORKLOAD_MODULES:
        raise ValueError(f"add '{workload.name}' to WORKLOAD_MODULES in {__name__}")
    WORKLOADS[workload.name] = workload
    return workload


def get_workload(name: str) -> Workload:
    """The registered workload, importing its module (and Django models) if needed."""
    if name not in WORKLOADS:
        importlib.import_module(WORKLOAD_MODULES[name])
    return WORKLOADS[name]
