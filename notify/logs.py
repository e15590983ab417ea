"""Logs: redacted before any handler sees them, one JSON object per line on request.

* **Redaction.** ``configure`` (Django's ``LOGGING_CONFIG``) installs a log
  record factory: every record, at every level and from every library, has its
  message formatted and redacted when it is made — email addresses, phone
  numbers, API tokens, bearer and basic credentials, signed links, Slack
  tokens and webhook URLs, ``password=...``-style values and long random
  strings are replaced by ``[email]``, ``[phone]``, ``[token]``,
  ``[redacted]``. The traceback of ``log.exception`` is redacted the same way.
  So pytest's ``caplog``, Sentry's handler or a file handler added later all
  receive clean records. ``RedactingFilter`` does the same for a handler in a
  process that does not use ``configure``.
* **Bodies are never logged.** notify logs ids and outcomes, never a rendered
  subject or text; libraries that log request bodies at DEBUG (``slack_sdk``,
  ``twilio``, ``urllib3``, aiosmtpd's ``mail.log``) are held at WARNING in
  ``LOGGING`` (``notify/project/settings.py``).
* **Context.** ``log_context(event_id=..., delivery_id=..., attempt=...)`` puts
  ids on every record made inside it (a ``ContextVar``, so threads and tasks
  keep their own); ``extra=`` works too. ``JsonFormatter`` writes them as
  fields (``NOTIFY_LOG_FORMAT=json``); ``PlainFormatter`` ends the line with
  them (``event_id=12 delivery_id=40 channel=email``), so every line of a send
  says which send it is about.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.config
import re
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

# Fields a record may carry into a JSON line (ids and low-cardinality labels).
FIELDS = (
    "event_id",
    "delivery_id",
    "attempt",
    "notification_id",
    "digest_id",
    "rule_id",
    "channel",
    "provider",
    "status",
    "outcome",
    "job",
    "task_id",
    "status_code",
)

_context: ContextVar[dict[str, Any] | None] = ContextVar("notify_log_context", default=None)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Stamp ``fields`` (ids, channel...) on every record made inside."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


# -- redaction ----------------------------------------------------------------------------

SENSITIVE_KEYS = (
    r"password|passwd|passphrase|secret|api[_-]?key|apikey|auth[_-]?token|access[_-]?token|"
    r"refresh[_-]?token|token|signature|authorization|credentials?|private[_-]?key|"
    r"verification[_-]?code|otp"
)
PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # user:password@ in URLs (before the email pattern eats "password@host").
    (re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+@"), "[credentials]@"),
    (re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=\-]{6,}"), r"\1 [token]"),
    (
        re.compile(rf"(?i)(?<![\w-])((?:{SENSITIVE_KEYS})[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;}}]+"),
        r"\1[redacted]",
    ),
    (re.compile(r"\bnfy_[0-9a-f]+_[A-Za-z0-9_\-]+"), "[token]"),
    (re.compile(r"\bxox[a-z]-[A-Za-z0-9\-]+"), "[token]"),
    (re.compile(r"(?i)(hooks\.slack\.com/services/)[^\s\"'<>]+"), r"\1[token]"),
    (re.compile(r"(?i)(/unsubscribe/)[^/\s\"'<>?]+"), r"\1[token]"),
    (re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]+"), "[token]"),
    (re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+"), "[email]"),
    (re.compile(r"(?<![\w+])\+\d[\d\s().\-]{6,18}\d(?!\w)"), "[phone]"),
    (re.compile(r"(?<![\w.\-])\(?\d{3}\)?[\s.\-]\d{3}[\s.\-]\d{4}(?![\w\-])"), "[phone]"),
    (re.compile(r"(?<![\w.:\-])\d{10,15}(?![\w.:\-])"), "[phone]"),
    # Long random strings (signed values, keys): letters and digits mixed, 24+.
    (re.compile(r"(?<![\w\-])(?=[\w\-:]*\d)(?=[\w\-:]*[A-Za-z])[\w\-:]{24,}(?![\w\-])"), "[token]"),
)


def redact(text: str) -> str:
    """``text`` with addresses, numbers, tokens and secrets replaced."""
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_plain = logging.Formatter()


PLAIN = (str, int, float, bool, type(None))


def scrub(record: logging.LogRecord) -> logging.LogRecord:
    """Redact ``record``'s message (and traceback) in place.

    A message with nothing to redact is left as it is, arguments and all (a
    formatter may read them: uvicorn's access log does). Otherwise the
    template and plain arguments are redacted one by one if that is enough,
    and else the message is formatted, redacted and frozen (no arguments)."""
    context = _context.get()
    if context:
        for key, value in context.items():
            record.__dict__.setdefault(key, value)
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: keep what can be kept, redacted
        message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = redact(message), None
    else:
        clean = redact(message)
        if clean != message:
            record.msg, record.args = _redacted_parts(record, clean)
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(_plain.formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


def _redacted_parts(record: logging.LogRecord, clean: str) -> tuple[Any, Any]:
    args = record.args
    if (
        isinstance(record.msg, str)
        and isinstance(args, tuple)
        and all(isinstance(arg, PLAIN) for arg in args)
    ):
        msg = redact(record.msg)
        parts = tuple(redact(arg) if isinstance(arg, str) else arg for arg in args)
        try:
            joined = msg % parts if parts else msg
        except (TypeError, ValueError):
            joined = None
        # Pieces can make an address together ("%s@%s"): check the whole.
        if joined is not None and redact(joined) == joined:
            return msg, parts
    return clean, None


class RedactingFilter(logging.Filter):
    """For handlers outside ``configure``: redact every record that passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrub(record)
        return True


_base_factory: Any = None


def install_redaction() -> None:
    """Make every log record redacted as it is created (idempotent)."""
    global _base_factory
    if _base_factory is not None:
        return
    _base_factory = logging.getLogRecordFactory()

    def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return scrub(_base_factory(*args, **kwargs))

    logging.setLogRecordFactory(redacted_record)


def configure(config: dict[str, Any]) -> None:
    """Django's ``LOGGING_CONFIG``: redaction first, then ``dictConfig``."""
    install_redaction()
    if config:
        logging.config.dictConfig(config)


# -- plain lines --------------------------------------------------------------------------


class PlainFormatter(logging.Formatter):
    """``time LEVEL logger message``, then the context fields present
    (``FIELDS``) as ``key=value``: the ids of a send stay on each of its lines."""

    def __init__(self, fmt: str | None = None, *args: Any, **kwargs: Any):
        super().__init__(fmt or "%(asctime)s %(levelname)s %(name)s %(message)s", *args, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [
            f"{key}={record.__dict__[key]}"
            for key in FIELDS
            if record.__dict__.get(key) is not None
        ]
        if not fields:
            return line
        first, newline, rest = line.partition("\n")  # a traceback stays below
        return f"{first} {redact(' '.join(fields))}{newline}{rest}"


# -- JSON lines ---------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, the
    context fields present (``FIELDS``), the process and, on errors, the
    redacted traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key in FIELDS:
            value = record.__dict__.get(key)
            if value is None:
                continue
            entry[key] = redact(value) if isinstance(value, str) else value
        entry["process"] = record.process
        if record.exc_info or record.exc_text:
            entry["exception"] = record.exc_text or redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
