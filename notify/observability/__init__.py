"""Operating notify: the figures behind the delivery-health dashboard and
``/metrics`` (``queries``), their SVG charts (``charts``), Prometheus
(``metrics``), readiness (``health``) and structured, redacted logs
(``logging``)."""

from . import checks  # noqa: F401 - registers the system checks
