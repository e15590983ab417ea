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
from typing import Any

from .conditions import CompiledCondition, ConditionError, compile_condition
from .recipients import RecipientSpec, parse_recipient_spec


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

    def candidates(self, event_type: str) -> list[CompiledRule]:
        rules = list(self.by_type.get(event_type, ()))
        rules += [r for r in self.patterns if fnmatch.fnmatchcase(event_type, r.event_type)]
        rules.sort(key=lambda r: (-r.priority, r.id))
        return rules

    def match(self, event_type: str, context: dict[str, Any]) -> list[RuleMatch]:
        """Every candidate rule with whether it matched and, if not, why."""
        results = []
        for rule in self.candidates(event_type):
            if rule.condition is None:
                results.append(RuleMatch(rule, True))
                continue
            try:
                ok = rule.condition.evaluate(context)
            except ConditionError as exc:
                results.append(RuleMatch(rule, False, str(exc)))
                continue
            results.append(RuleMatch(rule, ok, "" if ok else "condition is false"))
        return results


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
