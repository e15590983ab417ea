"""Bad configuration fails at start-up with a check that says what to set."""

from notify.checks import check_channels


def ids(errors):
    return [e.id for e in errors]


def test_default_configuration_passes():
    assert check_channels() == []


def test_missing_backend(settings):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {"email": {"OPTIONS": {}}},
        "DEFAULT_CHANNELS": ["email"],
    }
    assert ids(check_channels()) == ["notify.E002"]


def test_unimportable_backend_names_the_setting(settings):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {"email": {"BACKEND": "channels.nope.Missing"}},
        "DEFAULT_CHANNELS": ["email"],
    }
    [error] = check_channels()
    assert error.id == "notify.E003"
    assert "NOTIFY['CHANNELS']['email']['BACKEND']" in error.msg


def test_default_channel_must_be_configured(settings):
    settings.NOTIFY = {**settings.NOTIFY, "DEFAULT_CHANNELS": ["email", "pigeon"]}
    assert ids(check_channels()) == ["notify.E004"]


def test_a_channel_missing_its_secret_fails_at_start_up(settings):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "webhook": {"BACKEND": "channels.webhook.SignedWebhookChannel", "OPTIONS": {}},
        },
    }
    [error] = check_channels()
    assert error.id == "notify.E006"
    assert "SECRET" in error.msg
