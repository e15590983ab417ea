"""Operating notify: the figures behind the delivery-health dashboard and
``/metrics`` (``queries``, ``latency``), their SVG charts (``charts``),
Prometheus (``metrics``), readiness (``health``), their views (``views``) and
system checks (``checks``). Redacted logs are ``notify.logs``; the benchmark
that measures all this on a million seeded deliveries is ``bench.observability``."""

from notify.observability import checks  # noqa: F401 - registers the system checks
