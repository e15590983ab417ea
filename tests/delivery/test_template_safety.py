"""Templates written in admin are untrusted code: the sandbox must refuse escapes,
bound size and time, and autoescape HTML. No database, except where marked."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from jinja2.exceptions import SecurityError, TemplateError

from notify.delivery.rendering import sample_context, template_store, validate_template_source
from rules.sandbox import BoundedSandbox, TemplateCheckError, TemplateLimitError

MAX_PEAK_BYTES = 50 * 1024 * 1024
MAX_SECONDS = 2.0

SAMPLE = {"name": "Ann", "total": 12, "lines": ["a", "b"]}


def refused(source: str, part: str = "email.txt", payload: dict | None = None) -> TemplateError:
    """Validate ``source``; assert it is refused cheaply and return the error."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(TemplateError) as info:
            validate_template_source(part, source, SAMPLE if payload is None else payload)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < MAX_SECONDS, f"took {elapsed:.2f}s"
    assert peak < MAX_PEAK_BYTES, f"peak memory {peak / 1e6:.0f} MB"
    assert str(info.value), "the error must say why"
    return info.value


NAMESPACE_DOUBLING = (
    "{% set ns = namespace(s='ab') %}"
    "{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}"
)
MACRO_DOUBLING = (
    "{% macro grow(s, n) %}{% if n %}{{ grow(s ~ s, n - 1) }}{% else %}{{ s|length }}"
    "{% endif %}{% endmacro %}{{ grow('ab', 64) }}"
)
NESTED_RANGES = (
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}"
)

REFUSED = [
    # (id, source, error class, words the message must contain)
    ("syntax", "Hi {{ payload.name ", TemplateCheckError, "syntax error on line 1"),
    ("syntax-line", "a\nb\n{% if %}", TemplateCheckError, "line 3"),
    ("undefined-name", "{{ secret_key }}", TemplateCheckError, "unknown name 'secret_key'"),
    ("mro", "{{ ''.__class__.__mro__ }}", TemplateCheckError, "is not allowed"),
    ("globals", "{{ cycler.__init__.__globals__ }}", TemplateCheckError, "is not allowed"),
    ("getitem", "{{ payload['__class__'] }}", TemplateCheckError, "'__class__' is not allowed"),
    ("attr-filter", "{{ payload|attr('__class__') }}", SecurityError, "unsafe"),
    ("self", "{{ self.__init__ }}", TemplateCheckError, "'__init__' is not allowed"),
    ("repeat", "{{ 'a' * 10**8 }}", TemplateLimitError, "limit"),
    ("center", "{{ 'ab'|center(10**8) }}", TemplateLimitError, "limit"),
    ("percent-width", "{{ '%999999999s' % 1 }}", TemplateLimitError, "format width"),
    ("format-width", "{{ '{:>999999999}'.format(1) }}", TemplateLimitError, "format width"),
    ("format-filter", "{{ '%999999999s'|format(1) }}", TemplateLimitError, "format width"),
    ("power", "{{ 10 ** 100000 }}", TemplateLimitError, "too large"),
    ("namespace-doubling", NAMESPACE_DOUBLING, TemplateLimitError, "limit"),
    ("macro-doubling", MACRO_DOUBLING, TemplateLimitError, "limit"),
    ("nested-ranges", NESTED_RANGES, TemplateLimitError, "time limit"),
    ("huge-range", "{% for i in range(10**9) %}{% endfor %}", TemplateLimitError, "limit"),
    ("undefined-attribute", "{{ payload.missing }}", TemplateError, "missing"),
]


@pytest.mark.parametrize(
    ("source", "error_class", "words"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_dangerous_templates_are_refused(source, error_class, words):
    error = refused(source)
    assert isinstance(error, error_class), f"{type(error).__name__}: {error}"
    assert words in str(error)


@pytest.mark.parametrize("part", ["email.html", "sms"])
def test_escapes_are_refused_in_every_part(part):
    refused("{{ ''.__class__.__mro__ }}", part=part)
    refused("{{ payload|attr('__class__') }}", part=part)


def test_a_branch_the_sample_never_reaches_is_still_checked():
    error = refused("{% if false %}{{ payload.__class__ }}{% endif %}ok")
    assert "'__class__' is not allowed" in str(error)


def test_a_plain_template_renders():
    source = "Hi {{ payload.name }}, {{ payload.lines|join(', ') }} for {{ payload.total }}"
    assert validate_template_source("email.txt", source, SAMPLE) == "Hi Ann, a, b for 12"


# -- the sandbox on its own ------------------------------------------------------------


def test_bounded_sandbox_caps_output():
    env = BoundedSandbox(max_output=1000, timeout=1)
    template = env.from_string("{% for i in range(900) %}ab{% endfor %}")
    with pytest.raises(TemplateLimitError, match="output exceeds the 1000-character limit"):
        env.render_bounded(template, {})


def test_bounded_sandbox_stops_at_its_deadline():
    env = BoundedSandbox(timeout=0.05)
    template = env.from_string(NESTED_RANGES)
    started = time.monotonic()
    with pytest.raises(TemplateLimitError, match="time limit"):
        env.render_bounded(template, {})
    assert time.monotonic() - started < 1


def test_bounded_sandbox_names_unknown_names():
    env = BoundedSandbox()
    with pytest.raises(TemplateCheckError, match="unknown names 'a', 'b'; available: "):
        env.check_source("{{ a }}{{ b }}{{ payload }}", ["payload"])


def test_bounded_sandbox_autoescapes_only_when_asked():
    html, text = BoundedSandbox(autoescape=True), BoundedSandbox()
    source = "{{ value }}"
    context = {"value": "<b>&</b>"}
    assert html.render_bounded(html.from_string(source), context) == "&lt;b&gt;&amp;&lt;/b&gt;"
    assert text.render_bounded(text.from_string(source), context) == "<b>&</b>"


# -- XSS and SSTI ----------------------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"


def test_payload_html_is_escaped_in_html_but_verbatim_in_text():
    source = "<p>{{ payload.name }}</p>"
    html = validate_template_source("email.html", source, {"name": SCRIPT})
    text = validate_template_source("email.txt", source, {"name": SCRIPT})
    assert html == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert SCRIPT not in html
    assert text == f"<p>{SCRIPT}</p>"


def test_payload_template_syntax_is_rendered_literally():
    for part in ("email.txt", "email.html", "sms"):
        out = validate_template_source(part, "Hi {{ payload.name }}", {"name": "{{ 7*7 }}"})
        assert out == "Hi {{ 7*7 }}"
        assert "49" not in out


@pytest.mark.django_db
def test_shipped_message_escapes_html_and_keeps_text(settings):
    payload = {"order_id": SCRIPT, "carrier": "{{ 7*7 }}"}
    parts = template_store.render("order_shipped", "email", sample_context(payload))
    assert SCRIPT not in parts.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in parts.html
    assert SCRIPT in parts.text
    assert "{{ 7*7 }}" in parts.html + parts.text
    assert "49" not in parts.html + parts.text


# -- amplifiers that slip past per-value checks -------------------------------------------

CONCAT_CHAIN = "{% set a = 'a' * 1000 %}" + "".join(
    f"{{% set a{i} = {'a' if i == 0 else f'a{i - 1}'} ~ {'a' if i == 0 else f'a{i - 1}'} %}}"
    for i in range(16)
)
REPEATED_LIST_JOIN = "{% set a = 'a' * 10000 %}{{ ([a] * 10000)|join|length }}"


def test_concat_chain_is_bounded():
    refused(CONCAT_CHAIN + "{{ a15|length }}")


def test_repeated_list_of_big_strings_is_bounded():
    refused(REPEATED_LIST_JOIN)


def test_star_width_is_bounded():
    refused("{{ '%*s' % (99999999, 1) }}")


def test_nested_format_spec_is_bounded():
    refused("{{ '{0:>{1}}'.format(1, '99999999') }}")


def test_mapped_filter_results_are_bounded():
    refused("{{ range(500)|map('center', 100000)|join|length }}")


def test_quadratic_sum_stops_at_the_deadline():
    env = BoundedSandbox(timeout=0.05)
    template = env.from_string("{% set a = [1] * 1000 %}{{ ([a] * 1000)|sum(start=[])|length }}")
    started = time.monotonic()
    with pytest.raises(TemplateLimitError):
        env.render_bounded(template, {})
    assert time.monotonic() - started < 0.5


def test_deep_nesting_is_a_template_error():
    refused("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}")
