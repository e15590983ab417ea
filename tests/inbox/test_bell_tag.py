"""``{% notify_bell %}`` and ``{% notify_bell_token %}``: what they render."""

from django.contrib.auth.models import AnonymousUser
from django.template import engines

from notify.inbox import tokens


def render(source: str, **context) -> str:
    return engines["django"].from_string("{% load notify_bell %}" + source).render(context)


def test_same_origin_renders_the_element_and_script_without_a_token(make_user):
    html = render("{% notify_bell %}", user=make_user("alice"))
    assert '<script src="/static/notify/notify-inbox.js" defer></script>' in html
    assert '<notify-inbox api="/api/v1" label="Notifications" page-size="20"' in html
    assert 'inbox-url="/inbox/"' in html
    assert "token=" not in html


def test_another_origin_gets_absolute_urls_and_a_token_for_the_user(make_user):
    alice = make_user("alice")
    html = render(
        '{% notify_bell api_url="http://127.0.0.1:8000/" label="Alerts" page_size=5 %}',
        user=alice,
    )
    assert 'src="http://127.0.0.1:8000/static/notify/notify-inbox.js"' in html
    assert 'api="http://127.0.0.1:8000/api/v1"' in html
    assert 'label="Alerts" page-size="5"' in html
    token = html.split('token="')[1].split('"')[0]
    assert tokens.user_for_token(token) == alice.pk


def test_anonymous_gets_nothing(db):
    assert render("{% notify_bell %}", user=AnonymousUser()).strip() == ""
    assert render("{% notify_bell_token %}", user=AnonymousUser()) == ""


def test_the_token_tag(make_user):
    alice = make_user("alice")
    assert tokens.user_for_token(render("{% notify_bell_token %}", user=alice)) == alice.pk


def test_the_label_is_escaped(make_user):
    html = render(
        "{% notify_bell label=label %}", user=make_user("a"), label='"><script>x</script>'
    )
    assert "<script>x" not in html
