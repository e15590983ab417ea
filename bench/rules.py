"""Rule matching: events per second through ``RuleIndex.match``, 1,000 active
rules over 100 event types.

Setup stores the rules (untimed): per event type ten rules, one without a
condition and nine with the conditions ops write most (comparisons of payload
values, ``in`` lists, ``and``/``or``, ``is defined``, ``|length``); 1% of the
rules are wildcards (``bench.t3*``) and 2% have conditions outside the fast
subset (a ``map`` filter), so every event also goes through the sandbox a
little. Each run compiles the index from the database (``RuleIndexCache.get``,
timed apart as ``compile_s``) and matches ``EVENTS`` events of every type with
varied payloads.

The baseline, in the same run: the same index with every condition evaluated
by the Jinja2 sandbox only (``rules.conditions`` before ``rules.fastpath``).
``recompile_s`` is the rebuild every process makes after one rule is edited
(``rules.index.CompileMemo`` compiles only the changed condition).
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any

from django.conf import settings

from bench.registry import Context, Figure, Workload, register
from notify.models import Category
from rules.conditions import CompiledCondition
from rules.index import RuleIndex, rule_index
from rules.models import Rule

RULES = 1000
TYPES = 100
EVENTS = 20_000
PAYLOADS = 500

CONDITIONS = (
    "payload.total > {n}",
    "payload.status == 'paid' and payload.total >= {n}",
    "payload.country in ['FR', 'DE', 'NL'] or payload.customer.vip",
    "payload.customer.vip and payload.total > {n}",
    "payload.lines|length > {k}",
    "payload.coupon is defined and payload.coupon != ''",
    "not payload.customer.vip and payload.status in ['paid', 'shipped']",
    "payload.total - payload.discount > {n}",
    "payload.customer.country == 'FR' and payload.lines|length >= {k}",
)
SLOW_CONDITION = "payload.lines|map(attribute='sku')|list|length > {k}"


def rule_rows(category: Category) -> list[Rule]:
    rules = []
    for i in range(RULES):
        kind = i % 10
        if i % 100 == 99:  # bench.t0* ... bench.t9*: one or two per event type
            event_type, condition = f"bench.t{i // 100}*", "payload.total > 900"
        elif i % 50 == 7:
            event_type, condition = f"bench.t{i % TYPES}", SLOW_CONDITION.format(k=i % 3)
        else:
            event_type = f"bench.t{i % TYPES}"
            condition = "" if kind == 0 else CONDITIONS[kind - 1].format(n=(i * 7) % 500, k=i % 4)
        rules.append(
            Rule(
                name=f"bench rule {i:04d}",
                event_type=event_type,
                condition=condition,
                category=category,
                recipients=["explicit"],
                channels=["email"],
                message="order_shipped",
                priority=i % 5,
            )
        )
    return rules


def payloads(seed: int = 7) -> list[dict[str, Any]]:
    pick = random.Random(seed)
    out = []
    for i in range(PAYLOADS):
        payload: dict[str, Any] = {
            "order_id": f"A-{i}",
            "total": pick.randint(0, 1000),
            "discount": pick.randint(0, 50),
            "status": pick.choice(["new", "paid", "shipped", "cancelled"]),
            "country": pick.choice(["FR", "DE", "US", "JP", "NL"]),
            "customer": {"vip": pick.random() < 0.2, "country": pick.choice(["FR", "US"])},
            "lines": [{"sku": f"S{j}", "qty": 1} for j in range(pick.randint(0, 5))],
        }
        if pick.random() < 0.3:
            payload["coupon"] = pick.choice(["", "SPRING"])
        out.append(payload)
    return out


def setup(ctx: Context) -> dict[str, Any]:
    ctx.say(f"rules: storing {RULES:,} rules over {TYPES} event types")
    # Every get() checks the revision (this process only): the rebuild is measured.
    settings.NOTIFY = {**getattr(settings, "NOTIFY", {}), "CONFIG_CHECK_INTERVAL": 0}
    category = Category.objects.create(key="bench-rules", name="Bench rules")
    Rule.objects.bulk_create(rule_rows(category))
    events = []
    for i, payload in enumerate(payloads()):
        context = {
            "payload": payload,
            "event": {"id": i, "type": f"bench.t{i % TYPES}", "source": "python", "object": ""},
            "actor": None,
        }
        events.append((f"bench.t{i % TYPES}", context))
    return {"events": events}


def sandbox_only(index: RuleIndex) -> RuleIndex:
    """The same index with every condition evaluated by the sandbox alone."""

    def slow(rule: Any) -> Any:
        if rule.condition is None:
            return rule
        plain = CompiledCondition(rule.condition.source, rule.condition._expression)
        return dataclasses.replace(rule, condition=plain)

    return RuleIndex(
        by_type={t: [slow(r) for r in rules] for t, rules in index.by_type.items()},
        patterns=[slow(r) for r in index.patterns],
        broken=dict(index.broken),
    )


def measure(index: RuleIndex, events: list[tuple[str, dict]], count: int) -> dict[str, Any]:
    candidates = matched = 0
    n = len(events)
    started, cpu_started = time.perf_counter(), time.process_time()
    for i in range(count):
        event_type, context = events[i % n]
        for result in index.match(event_type, context):
            candidates += 1
            matched += result.matched
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    return {
        "events": count,
        "seconds": seconds,
        "events_per_s": count / seconds,
        # CPU time too: on a busy machine the wall clock measures the neighbours.
        "events_per_cpu_s": count / cpu_seconds if cpu_seconds else 0.0,
        "us_per_event": seconds / count * 1e6,
        "candidates_per_event": candidates / count,
        "matched_per_event": matched / count,
    }


def run(ctx: Context, state: dict[str, Any]) -> dict[str, Any]:
    rule_index.clear()
    started = time.perf_counter()
    index = rule_index.get()
    compile_s = time.perf_counter() - started
    if index.broken:
        raise RuntimeError(f"rules workload: {len(index.broken)} rules did not compile")
    # One rule edited: every process rebuilds its index, compiling only what changed.
    edited = Rule.objects.filter(event_type="bench.t1").exclude(condition="").first()
    edited.condition = f"{edited.condition} and payload.total != {ctx.run_number}"
    edited.save(update_fields=["condition"])
    started = time.perf_counter()
    index = rule_index.get()
    recompile_s = time.perf_counter() - started
    events = state["events"]
    measure(index, events, min(EVENTS, 2_000))  # warm the candidate memo
    figures = measure(index, events, EVENTS)
    slow = sandbox_only(index)
    measure(slow, events, 500)
    baseline = measure(slow, events, max(EVENTS // 5, 1))
    figures.update(
        rules=sum(len(r) for r in index.by_type.values()) + len(index.patterns),
        event_types=TYPES,
        compile_s=compile_s,
        recompile_s=recompile_s,
        baseline=baseline,
        ratio=figures["us_per_event"] / baseline["us_per_event"],
    )
    ctx.say(
        f"rules run {ctx.run_number}: {figures['events_per_s']:,.0f} events/s, "
        f"sandbox only {baseline['events_per_s']:,.0f} events/s"
    )
    return figures


register(
    Workload(
        name="rules",
        title=f"Rule matching: RuleIndex.match, {RULES:,} active rules over {TYPES} event types",
        setup=setup,
        run=run,
        figures=(
            Figure("rules", "rules"),
            Figure("events matched", "events"),
            Figure("candidate rules per event", "candidates_per_event"),
            Figure("matching rules per event", "matched_per_event"),
            Figure("time per event", "us_per_event", "µs", baseline="baseline.us_per_event"),
            Figure("events/s", "events_per_s", baseline="baseline.events_per_s"),
            Figure(
                "events per CPU second", "events_per_cpu_s", baseline="baseline.events_per_cpu_s"
            ),
            Figure("index compile (1,000 rules)", "compile_s", "s"),
            Figure("index rebuild after one edit", "recompile_s", "s"),
            Figure("time / sandbox-only time", "ratio", "x"),
        ),
    )
)
