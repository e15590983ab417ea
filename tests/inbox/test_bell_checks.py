"""notify.E085/E086: the bell's settings are checked at start-up."""

import pytest

from notify.inbox.checks import check_bell_settings


def ids(settings, **notify):
    settings.NOTIFY = {**settings.NOTIFY, **notify}
    return [(e.id, e.msg) for e in check_bell_settings()]


def test_the_defaults_pass(settings):
    assert ids(settings) == []
    assert (
        ids(settings, BELL_ALLOWED_ORIGINS=["https://app.example.com", "http://127.0.0.1:8080"])
        == []
    )


@pytest.mark.parametrize(
    "origins",
    [
        "https://app.example.com",
        ["*"],
        ["https://app.example.com/"],
        ["app.example.com"],
        ["https://a.example/x"],
        [3],
    ],
)
def test_bad_origins_are_e085_naming_the_value(settings, origins):
    [(check_id, message)] = ids(settings, BELL_ALLOWED_ORIGINS=origins)
    assert check_id == "notify.E085"
    assert "BELL_ALLOWED_ORIGINS" in message


@pytest.mark.parametrize("max_age", [0, -5, "3600", None, True])
def test_a_bad_token_lifetime_is_e086(settings, max_age):
    [(check_id, message)] = ids(settings, BELL_TOKEN_MAX_AGE=max_age)
    assert check_id == "notify.E086"
    assert "BELL_TOKEN_MAX_AGE" in message
