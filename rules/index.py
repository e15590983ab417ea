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
from typing import Any, NamedTuple

from .conditions import (
    CompiledCondition,
    CompiledExpression,
    ConditionError,
    compile_condition,
    compile_expression,
)
from .fallback import parse_fallback
from .fastpath import UNDEFINED
from .recipients import RecipientSpec, parse_recipient_spec
from .throttle import ThrottleSpec, make_throttle
from .windows import ActiveWindow, make_window
from .workflow import STEP_FIELDS, CompiledStep, compile_steps


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
    # When its deliveries are due (see notify.fanout.send_time.send_time).
    delay: timedelta | None = None
    send_at_path: str = ""
    send_at_offset: timedelta | None = None
    # Ops controls (applied at fan-out by notify.fanout.policies).
    exclude_actor: bool = True
    stop_processing: bool = False
    dry_run: bool = False
    throttle: ThrottleSpec | None = None
    dedup_key: CompiledExpression | None = None
    dedup_window: timedelta | None = None
    fallback: tuple[tuple[str, str], ...] = ()
    active_window: ActiveWindow | None = None
    # The workflow (``rules.workflow``); empty: the one-step rule it always was.
    steps: tuple[CompiledStep, ...] = ()


class RuleMatch(NamedTuple):
    """One candidate rule's verdict (a named tuple: matching makes millions)."""

    rule: CompiledRule
    matched: bool
    reason: str = ""
    failed: bool = False  # the condition could not be evaluated (``reason`` says why)


@dataclass(slots=True)
class RuleIndex:
    by_type: dict[str, list[CompiledRule]] = field(default_factory=dict)
    patterns: list[CompiledRule] = field(default_factory=list)
    broken: dict[int, str] = field(default_factory=dict)  # rule id -> why it was left out
    # event type -> its candidates in order; the index is replaced, never
    # changed, so this memo never goes stale (it is capped for wildcards).
    _candidates: dict[str, tuple[tuple[CompiledRule, Any, Any], ...]] = field(
        default_factory=dict, repr=False
    )

    def candidates(self, event_type: str) -> list[CompiledRule]:
        """The rules for ``event_type``, highest priority first (then by id)."""
        return [rule for rule, _, _ in self._ordered(event_type)]

    def _ordered(self, event_type: str) -> tuple[tuple[CompiledRule, Any, Any], ...]:
        """(rule, fast evaluator or None, ``evaluate`` or None) in order, memoised."""
        found = self._candidates.get(event_type)
        if found is None:
            rules = list(self.by_type.get(event_type, ()))
            rules += [r for r in self.patterns if fnmatch.fnmatchcase(event_type, r.event_type)]
            rules.sort(key=lambda r: (-r.priority, r.id))
            found = tuple(
                (r, r.condition._fast, r.condition.evaluate) if r.condition else (r, None, None)
                for r in rules
            )
            if len(self._candidates) >= CANDIDATE_MEMO_SIZE:
                self._candidates.clear()
            self._candidates[event_type] = found
        return found

    def match(self, event_type: str, context: dict[str, Any]) -> list[RuleMatch]:
        """Every candidate rule with whether it matched and, if not, why.

        A matched rule with "stop after this rule" leaves every rule after it
        (lower priority, or the same priority and a higher id) unmatched,
        with the reason. (The loop inlines ``CompiledCondition.evaluate``'s
        fast path: this is the hottest loop of fan-out.)"""
        results = []
        append = results.append
        stopped_by: CompiledRule | None = None
        for rule, fast, evaluate in self._ordered(event_type):
            if stopped_by is not None:
                append(
                    RuleMatch(rule, False, f"stopped by rule '{stopped_by.name}' (higher priority)")
                )
                continue
            if evaluate is not None:
                value = UNDEFINED
                if fast is not None:
                    try:
                        value = fast(context)
                    except Exception:  # Fallback, or an error the sandbox words properly
                        value = UNDEFINED
                if value is UNDEFINED:
                    try:
                        value = evaluate(context)
                    except ConditionError as exc:
                        append(RuleMatch(rule, False, str(exc), True))
                        continue
                if not value:
                    append(RuleMatch(rule, False, "condition is false"))
                    continue
            append(RuleMatch(rule, True, ""))
            if rule.stop_processing:
                stopped_by = rule
        return results


CANDIDATE_MEMO_SIZE = 10_000


class CompileMemo:
    """Compiled conditions by source, carried from one index build to the next:
    after an edit only what changed is compiled again (a condition costs
    milliseconds to check and compile; 1,000 rules, seconds). Compiled
    conditions are immutable, so sharing them is safe; what the new index no
    longer uses is dropped with the old one."""

    def __init__(self, previous: dict[tuple[str, str], Any] | None = None):
        self.previous = previous or {}
        self.current: dict[tuple[str, str], Any] = {}

    def get(self, kind: str, source: str, compile_: Any) -> Any:
        key = (kind, (source or "").strip())
        if key not in self.current:
            self.current[key] = (
                self.previous[key] if key in self.previous else compile_(source or "")
            )
        return self.current[key]


def compile_rule(row: dict[str, Any], memo: CompileMemo | None = None) -> CompiledRule:
    """Compile one rule row (a dict of Rule's fields); raises ValueError."""
    memo = memo or CompileMemo()
    return CompiledRule(
        id=row["id"],
        name=row["name"],
        event_type=row["event_type"],
        condition=memo.get("condition", row.get("condition", ""), compile_condition),
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
        dedup_key=memo.get("expression", row.get("dedup_key") or "", compile_expression),
        dedup_window=row.get("dedup_window"),
        fallback=tuple(parse_fallback(row.get("fallback")).items()),
        active_window=make_window(
            row.get("active_days"),
            row.get("active_from"),
            row.get("active_until"),
            row.get("active_timezone") or "UTC",
        ),
        steps=compile_steps(row.get("steps") or ()),
    )


def build_index(rows: Iterable[dict[str, Any]], memo: CompileMemo | None = None) -> RuleIndex:
    index = RuleIndex()
    for row in rows:
        try:
            rule = compile_rule(row, memo)
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


def attach_steps(rows: list[dict[str, Any]]) -> None:
    """Each rule row gets its workflow step rows under ``steps`` (one query)."""
    from .models import WorkflowStep  # the models need the app registry; this module does not

    by_rule: dict[int, list[dict[str, Any]]] = {}
    ids = [row["id"] for row in rows]
    if ids:
        for step in WorkflowStep.objects.filter(rule_id__in=ids).values(*STEP_FIELDS):
            by_rule.setdefault(step["rule_id"], []).append(step)
    for row in rows:
        row["steps"] = by_rule.get(row["id"], [])


class RuleIndexCache:
    """One compiled index per process, refreshed when the revision moves."""

    def __init__(self, check_interval: float = 1.0):
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._index: RuleIndex | None = None
        self._revision: int | None = None
        self._checked_at = 0.0
        self._compiled: dict[tuple[str, str], Any] = {}

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
                rows = list(Rule.objects.filter(is_active=True).values(*RULE_FIELDS))
                attach_steps(rows)
                memo = CompileMemo(self._compiled)
                self._index = build_index(rows, memo)
                self._compiled = memo.current
                self._revision = revision
            return self._index

    def clear(self) -> None:
        with self._lock:
            self._index = None
            self._revision = None
            self._compiled = {}


rule_index = RuleIndexCache()
