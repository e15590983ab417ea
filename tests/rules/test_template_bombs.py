"""A corpus of template and condition bombs (issue 13).

Each must be refused with a clear error within the bound (a render stops at
its deadline; 1.5 s leaves room for a slow shared machine) and with bounded
memory, both at save-time validation (the function admin forms call) and in
the worker's render, and conditions likewise. No database.
"""

from __future__ import annotations

import threading
import time
import tracemalloc

import pytest
from jinja2.exceptions import TemplateError

from notify.delivery.rendering import make_environments, validate_template_source
from rules.conditions import ConditionError, compile_condition
from rules.sandbox import BoundedSandbox, TemplateLimitError

MAX_SECONDS = 1.5
MAX_PEAK_BYTES = 48 * 1024 * 1024
SAMPLE = {"name": "Ann", "lines": ["a", "b", "c"], "big": ["x" * 100] * 1000}

S = "{% set s = 'x' * 200000 %}"
BOMBS = {
    # nested loops
    "nested-ranges": "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}",
    "nested-ranges-output": "{% for a in range(10000) %}{% for b in range(10000) %}x{% endfor %}{% endfor %}",
    "nested-string-loops": S + "{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "nested-list-loops": "{% for a in payload.big %}{% for b in payload.big %}{% for c in payload.big %}{% endfor %}{% endfor %}{% endfor %}",
    "loop-filter": S + "{% for a in s %}{% for b in s if b == 'y' %}{% endfor %}{% endfor %}",
    "buffered-output": "{% set x %}{% for a in range(10000) %}{% for b in range(10000) %}xxxxxxxxxxxxxxxx{% endfor %}{% endfor %}{% endset %}{{ x|length }}",
    "macro-buffer": "{% macro m() %}{% for a in range(100000) %}{{ 'y' * 1000 }}{% endfor %}{% endmacro %}{{ m()|length }}",
    "call-block": "{% macro w() %}{{ caller() }}{% endmacro %}{% call w() %}{% for a in range(100000) %}{{ 'y' * 1000 }}{% endfor %}{% endcall %}",
    "filter-block": "{% filter upper %}{% for a in range(100000) %}{{ 'y' * 1000 }}{% endfor %}{% endfilter %}",
    "recursive-loop": "{% for a in [[1, 2]] * 10 recursive %}{{ loop([a] * 2) }}{% endfor %}",
    # recursion through macros
    "macro-recursion": "{% macro r(n) %}{{ r(n + 1) }}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}",
    "macro-fanout": "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "macro-doubling": "{% macro g(s, n) %}{% if n %}{{ g(s ~ s, n - 1) }}{% else %}{{ s|length }}{% endif %}{% endmacro %}{{ g('ab', 64) }}",
    # large literals and filters that multiply
    "string-times": "{{ 'x' * 10**9 }}",
    "range-huge": "{{ range(10**9)|list|length }}",
    "list-times": "{{ ([1] * 10**8)|length }}",
    "join-huge": "{{ range(99999)|map('string')|list|join('y' * 100000) }}",
    "join-separator": S + "{{ (s|list)|join(s)|length }}",
    "percent-mapping": S + "{{ ('%(a)s' * 40000) % {'a': s} }}",
    "format-filter": S
    + "{{ ('%s' * 2)|format(s, s)|length }}{{ ('%(a)s' * 40000)|format(a=s)|length }}",
    "str-format-repeat": S + "{{ ('{0}' * 60000).format(s)|length }}",
    "str-replace": S + "{{ s.replace('x', s)|length }}",
    "replace-filter": S + "{{ s|replace('x', s)|length }}",
    "indent": "{% set s = '\\n' * 200000 %}{{ s|indent(200000)|length }}",
    "expandtabs": "{% set s = '\\t' * 200000 %}{{ s.expandtabs(200000)|length }}",
    "translate": S + "{{ s.translate({120: s})|length }}",
    "string-times-nested": S
    + "{% for a in range(100000) %}{% for b in range(100000) %}{% set t = s * 1 %}{% endfor %}{% endfor %}",
    "batch-references": S + "{{ ([1]|batch(100000, s)|first)|string|length }}",
    "print-references": S + "{{ [1]|batch(100000, s)|first }}",
    "concat-list": S + "{% set l = [1]|batch(100000, s)|first %}{{ (l ~ '')|length }}",
    "namespace-tree": "{% set ns = namespace(x=['ab']) %}{% for i in range(200) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x|string|length }}",
    "tojson": S + "{{ ([1]|batch(100000, s)|first)|tojson|length }}",
    "pprint": S + "{{ ([1]|batch(100000, s)|first)|pprint|length }}",
    "center": "{{ 'ab'|center(10**8) }}",
    "power": "{{ 10 ** 100000 }}",
    "sum-lists": "{% set a = [1] * 1000 %}{{ ([a] * 1000)|sum(start=[])|length }}",
    "wordwrap": S
    + "{{ (s ~ ' ')|wordwrap(1)|length }}{{ ((s ~ ' ') * 1)|wordwrap(1, wrapstring=s)|length }}",
    "dict-items": S
    + "{{ dict(a=s, b=s, c=s, d=s)|string|length }}{{ (dict(a=s)|dictsort * 1000)|length }}",
}


def assert_bounded(run):
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises((TemplateError, ConditionError)) as info:
            run()
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < MAX_SECONDS, f"took {elapsed:.2f}s"
    assert peak < MAX_PEAK_BYTES, f"peak memory {peak / 1e6:.0f} MB"
    assert str(info.value)
    return info.value


@pytest.mark.parametrize("source", BOMBS.values(), ids=BOMBS.keys())
def test_bomb_refused_at_save_time(source):
    error = assert_bounded(lambda: validate_template_source("email.txt", source, SAMPLE))
    assert isinstance(error, TemplateError)


@pytest.mark.parametrize("source", BOMBS.values(), ids=BOMBS.keys())
def test_bomb_stopped_in_the_worker(source):
    _text, html = make_environments()
    template = html.from_string(source)
    context = {"payload": SAMPLE}
    assert_bounded(lambda: html.render_bounded(template, context))


CONDITION_BOMBS = {
    "string-times": "('x' * 10**9)|length > 1",
    "range": "range(10**9)|list|length > 1",
    "list-times": "([1] * 10**8)|length",
    "join": "range(99999)|map('string')|join('y' * 100000)|length",
    "nested-map": "range(100000)|map('string')|map('center', 100000)|join|length",
    "percent": "(('%(a)s' * 40000) % {'a': 'x' * 200000})|length",
    "replace": "('x' * 200000).replace('x', 'x' * 200000)|length",
    "sum": "([[1] * 1000] * 1000)|sum(start=[])|length",
    "power": "10 ** 100000",
}


@pytest.mark.parametrize("source", CONDITION_BOMBS.values(), ids=CONDITION_BOMBS.keys())
def test_condition_bomb_refused(source):
    def run():
        condition = compile_condition(source)
        condition.evaluate({"payload": SAMPLE, "event": {}, "actor": None})

    assert_bounded(run)


def test_loop_iterations_are_counted():
    env = BoundedSandbox(timeout=30, max_iterations=1000)
    template = env.from_string("{% for a in payload.big %}{% endfor %}")
    with pytest.raises(TemplateLimitError, match="loop iterations"):
        env.render_bounded(template, {"payload": {"big": list(range(2000))}})
    assert env.render_bounded(template, {"payload": {"big": list(range(900))}}) == ""


def test_legitimate_templates_still_render():
    env = BoundedSandbox()
    source = (
        "{% macro row(i) %}<li>{{ i }}</li>{% endmacro %}"
        "{% for i in payload.lines %}{{ row(i) }}{% endfor %}"
        "{{ payload.lines|join(', ') }} {{ '%s/%s'|format(1, 2) }} {{ 'a-b'.replace('-', '+') }}"
        "{{ '{0} {1}'.format('x', 'y') }} {{ payload.name|center(7) }}"
    )
    out = env.render_bounded(env.from_string(source), {"payload": SAMPLE})
    assert out == "<li>a</li><li>b</li><li>c</li>a, b, c 1/2 a+bx y   Ann  "


def test_a_bomb_does_not_hold_up_other_renders():
    """Two worker threads: a bomb in one, normal renders in the other."""
    env = BoundedSandbox(timeout=1.0)
    bomb = env.from_string(BOMBS["nested-string-loops"])
    normal = env.from_string("Hello {{ name }}")
    errors, latencies = [], []

    def run_bomb():
        try:
            env.render_bounded(bomb, {})
        except TemplateLimitError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run_bomb)
    started = time.monotonic()
    thread.start()
    while thread.is_alive():
        t0 = time.monotonic()
        assert env.render_bounded(normal, {"name": "Ann"}) == "Hello Ann"
        latencies.append(time.monotonic() - t0)
        time.sleep(0.01)
    thread.join()
    assert errors and time.monotonic() - started < MAX_SECONDS
    assert max(latencies) < 0.5
    assert isinstance(errors[0], TemplateLimitError)
