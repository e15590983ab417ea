"""A used unsubscribe link says "you are unsubscribed" and offers resubscribe."""

from __future__ import annotations

from django.test import Client

from notify.models import ChannelPreference
from notify.preferences.one_click import UnsubscribeScope, make_token


def test_a_used_link_says_so_and_resubscribes(make_user, category):
    alice = make_user("alice")
    url = f"/unsubscribe/{make_token(UnsubscribeScope(alice.pk, category.key, 'email'))}/"
    client = Client(enforce_csrf_checks=True)
    assert client.post(url, {"List-Unsubscribe": "One-Click"}).status_code == 200
    assert ChannelPreference.objects.get(user=alice).enabled is False

    page = client.get(url).content.decode()  # the link, opened again
    assert "You are unsubscribed" in page and "Resubscribe" in page
    token = client.cookies["csrftoken"].value

    # Without the CSRF token a form post changes nothing.
    assert client.post(url, {"action": "resubscribe"}).status_code == 403
    assert ChannelPreference.objects.get(user=alice).enabled is False

    page = client.post(url, {"action": "resubscribe", "csrfmiddlewaretoken": token})
    assert "You are subscribed again" in page.content.decode()
    assert ChannelPreference.objects.get(user=alice).enabled is True
    # Turned back on, the link asks again before unsubscribing.
    assert "Unsubscribe from Orders?" in client.get(url).content.decode()
