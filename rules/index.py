"""The compiled rule set, indexed by event type, and the matching stage.

``build_index`` is pure: rows in, index out. ``RuleIndexCache`` keeps one index
per process and rebuilds it when the rules revision changes.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .conditions import (
    CompiledCondition,
    CompiledExpression,
    ConditionError,
    compile_condition,
    compile_expression,
)
from .fallback import parse_fallback
from .recipients import RecipientSpec, parse_recipient_spec
from .throttle import ThrottleSpec, make_throttle
from .windows import ActiveWindow, make_window


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: int
    name: str
    event_type: str
    condition: CompiledCondition | None
    category_id: int
    recipients: tuple[RecipientSpec, ...]
    channels: tuple[str, ...]
    message: str
    priority: int = 0
    # When its deliveries are due (see notify.reminders.send_time).
    delay: timedelta | None = None
    send_at_path: str = ""
    send_at_offset: timedelta | None = None
    # Ops controls (applied at fan-out by notify.rule_policies).
    exclude_actor: bool = True
    stop_processing: bool = False
    dry_run: bool = False
    throttle: ThrottleSpec | None = None
    dedup_key: CompiledExpression | None = None
    dedup_window: timedelta | None = None
    fallback: tuple[tuple[str, str], ...] = ()
    active_window: ActiveWindow | None = None


@dataclass(frozen=True, slots=True)
class RuleMatch:
    rule: CompiledRule
    matched: bool
    reason: str = ""


@dataclass(slots=True)
class RuleIndex:
    by_type: dict[str, list[CompiledRule]] = field(default_factory=dict)
    patterns: list[CompiledRule] = field(default_factory=list)
    broken: dict[int, str] = field(default_factory=dict)  # rule id -> why it was left out
    # event type -> its candidates in order; the index is replaced, never
    # changed, so this memo never goes stale (it is capped for wildcards).
    _candidates: dict[str, tuple[CompiledRule, ...]] = field(default_factory=dict, repr=False)

    def candidates(self, event_type: str) -> list[CompiledRule]:
        """The rules for ``event_type``, highest priority first (then by id)."""
        return list(self._ordered(event_type))

    def _ordered(self, event_type: str) -> tuple[CompiledRule, ...]:
        found = self._candidates.get(event_type)
        if found is None:
            rules = list(self.by_type.get(event_type, ()))
            rules += [r for r in self.patterns if fnmatch.fnmatchcase(event_type, r.event_type)]
            rules.sort(key=lambda r: (-r.priority, r.id))
            found = tuple(rules)
            if len(self._candidates) >= CANDIDATE_MEMO_SIZE:
                self._candidates.clear()
            self._candidates[event_type] = found
        return found

    def match(self, event_type: str, context: dict[str, Any]) -> list[RuleMatch]:
        """Every candidate rule with whether it matched and, if not, why.

        A matched rule with "stop after this rule" leaves every rule after it
        (lower priority, or the same priority and a higher id) unmatched,
        with the reason."""
        results = []
        stopped_by: CompiledRule | None = None
        for rule in self._ordered(event_type):
            if stopped_by is not None:
                results.append(
                    RuleMatch(rule, False, f"stopped by rule '{stopped_by.name}' (higher priority)")
                )
                continue
            if rule.condition is None:
                ok, reason = True, ""
            else:
                try:
                    ok = rule.condition.evaluate(context)
                except ConditionError as exc:
                    results.append(RuleMatch(rule, False, str(exc)))
                    continue
                reason = "" if ok else "condition is false"
            results.append(RuleMatch(rule, ok, reason))
            if ok and rule.stop_processing:
                stopped_by = rule
        return results


CANDIDATE_MEMO_SIZE = 10_000


def compile_rule(row: dict[str, Any]) -> CompiledRule:
    """Compile one rule row (a dict of Rule's fields); raises ValueError."""
    return CompiledRule(
        id=row["id"],
        name=row["name"],
        event_type=row["event_type"],
        condition=compile_condition(row.get("condition", "")),
        category_id=row["category_id"],
        recipients=tuple(parse_recipient_spec(s) for s in row.get("recipients") or ()),
        channels=tuple(row.get("channels") or ()),
        message=row["message"],
        priority=row.get("priority", 0),
        delay=row.get("delay"),
        send_at_path=row.get("send_at_path") or "",
        send_at_offset=row.get("send_at_offset"),
        exclude_actor=row.get("exclude_actor", True),
        stop_processing=row.get("stop_processing", False),
        dry_run=row.get("dry_run", False),
        throttle=make_throttle(
            row.get("throttle_limit"),
            row.get("throttle_window"),
            row.get("throttle_scope") or "",
            row.get("throttle_action") or "",
        ),
        dedup_key=compile_expression(row.get("dedup_key") or ""),
        dedup_window=row.get("dedup_window"),
        fallback=tuple(parse_fallback(row.get("fallback")).items()),
        active_window=make_window(
            row.get("active_days"),
            row.get("active_from"),
            row.get("active_until"),
            row.get("active_timezone") or "UTC",
        ),
    )


def build_index(rows: Iterable[dict[str, Any]]) -> RuleIndex:
    index = RuleIndex()
    for row in rows:
        try:
            rule = compile_rule(row)
        except (ValueError, RecursionError) as exc:
            # Admin validates at save time; a rule that still fails (edited in
            # the database directly) is left out and reported, never run.
            index.broken[row["id"]] = str(exc)
            continue
        if any(ch in rule.event_type for ch in "*?["):
            index.patterns.append(rule)
        else:
            index.by_type.setdefault(rule.event_type, []).append(rule)
    return index


RULE_FIELDS = (
    "id",
    "name",
    "event_type",
    "condition",
    "category_id",
    "recipients",
    "channels",
    "message",
    "priority",
    "delay",
    "send_at_path",
    "send_at_offset",
    "exclude_actor",
    "stop_processing",
    "dry_run",
    "throttle_limit",
    "throttle_window",
    "throttle_scope",
    "throttle_action",
    "dedup_key",
    "dedup_window",
    "fallback",
    "active_days",
    "active_from",
    "active_until",
    "active_timezone",
)


class RuleIndexCache:
    """One compiled index per process, refreshed when the revision moves."""

    def __init__(self, check_interval: float = 1.0):
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._index: RuleIndex | None = None
        self._revision: int | None = None
        self._checked_at = 0.0

    def get(self) -> RuleIndex:
        from django.conf import settings

        from .models import ConfigRevision, Rule

        interval = getattr(settings, "NOTIFY", {}).get("CONFIG_CHECK_INTERVAL", self.check_interval)
        now = time.monotonic()
        if self._index is not None and now - self._checked_at < interval:
            return self._index
        with self._lock:
            revision = ConfigRevision.current("rules")
            self._checked_at = time.monotonic()
            if self._index is None or revision != self._revision:
                rows = Rule.objects.filter(is_active=True).values(*RULE_FIELDS)
                self._index = build_index(rows)
                self._revision = revision
            return self._index

    def clear(self) -> None:
        with self._lock:
            self._index = None
            self._revision = None


rule_index = RuleIndexCache()
