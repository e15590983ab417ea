"""Operating notify: the figures behind the delivery-health dashboard and
``/metrics`` (``queries``, ``latency``), their SVG charts (``charts``),
Prometheus (``metrics``), readiness (``health``), structured and redacted logs
(``logging``), system checks (``checks``), and the benchmark that measures
them on a million seeded deliveries (``bench``, ``seed``)."""

from notify.observability import checks  # noqa: F401 - registers the system checks
