"""The rule-matching workload of ``notify bench``, in this process with small sizes."""

from __future__ import annotations

from bench import rules as workload
from bench.registry import Context, get_workload
from rules.index import rule_index


def test_rule_matching_workload(db, monkeypatch, settings):
    monkeypatch.setattr(workload, "EVENTS", 1_000)
    ctx = Context(database="sqlite", recipients=1, emails=1, runs=1, run_number=1)
    state = workload.setup(ctx)
    figures = workload.run(ctx, state)
    assert figures["rules"] == 1_000 and figures["event_types"] == 100
    assert figures["events"] == 1_000
    assert 10 <= figures["candidates_per_event"] <= 12  # ten per type, and a wildcard or two
    assert 0 < figures["matched_per_event"] < figures["candidates_per_event"]
    assert figures["events_per_s"] > 0 and figures["baseline"]["events_per_s"] > 0
    # The fast path gives the sandbox's answers: the same rules match, for the same reasons.
    index = rule_index.get()
    slow = workload.sandbox_only(index)
    for event_type, context in state["events"]:
        fast = [(m.rule.id, m.matched, m.reason) for m in index.match(event_type, context)]
        assert fast == [(m.rule.id, m.matched, m.reason) for m in slow.match(event_type, context)]
    assert figures["recompile_s"] < figures["compile_s"]
    assert get_workload("rules").figures
