"""Bad configuration fails at start-up with a check that says what to set."""

from channels.base import Channel
from notify import conf
from notify.checks import check_channels, check_notify_keys, check_secret_key, check_site_url_host
from notify.testing import CapturingChannel


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


# -- the NOTIFY keys (notify.conf.SETTINGS) ---------------------------------------------


def test_every_setting_has_a_one_line_description():
    for key, setting in conf.SETTINGS.items():
        assert key.isupper(), key
        assert setting.doc.strip(), f"NOTIFY[{key!r}] has no description"
        assert "\n" not in setting.doc, f"NOTIFY[{key!r}]: describe it in one line"
        assert setting.doc.endswith("."), key


def test_get_returns_the_default_of_a_key_left_out(settings):
    settings.NOTIFY = {"MAX_ATTEMPTS": 3}
    assert conf.get("MAX_ATTEMPTS") == 3
    assert conf.get("RETRY_FACTOR") == conf.SETTINGS["RETRY_FACTOR"].default == 2.0


def test_the_project_settings_use_only_known_keys():
    assert check_notify_keys() == []


def test_an_unknown_key_is_refused_with_the_closest_and_the_valid_ones(settings):
    settings.NOTIFY = {**settings.NOTIFY, "RETRY_MAX_DELAYS": 60, "COLOUR": "blue"}
    errors = check_notify_keys()
    assert ids(errors) == ["notify.E007", "notify.E007"]
    colour, delays = errors
    assert "NOTIFY['COLOUR'] is not a notify setting." in colour.msg
    assert "did you mean 'RETRY_MAX_DELAY'?" in delays.msg
    assert "MAX_ATTEMPTS" in delays.hint and "SITE_URL" in delays.hint


# -- channel options (Channel.accepted_options) -----------------------------------------


def channel_classes():
    """Every concrete channel shipped in channels/ (and notify.testing's)."""
    import importlib
    import inspect
    import pkgutil

    import channels

    found = {CapturingChannel}
    for module in pkgutil.iter_modules(channels.__path__):
        for _, cls in inspect.getmembers(importlib.import_module(f"channels.{module.name}")):
            if inspect.isclass(cls) and issubclass(cls, Channel) and cls is not Channel:
                found.add(cls)
    return sorted(found, key=lambda cls: cls.__qualname__)


def test_every_channel_declares_the_options_it_reads():
    classes = channel_classes()
    assert len(classes) >= 10
    for cls in classes:
        assert cls.accepted_options is not None, f"{cls.__qualname__} declares no options"


def test_an_unknown_channel_option_is_refused_with_the_valid_ones(settings):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "sms": {
                "BACKEND": "channels.sandbox.SandboxChannel",
                "OPTIONS": {"ADDRES_KIND": "phone", "FORMAT": "sms"},
            },
        },
    }
    [error] = check_channels()
    assert error.id == "notify.E008"
    assert "NOTIFY['CHANNELS']['sms']['OPTIONS']" in error.msg
    assert "'ADDRES_KIND' (did you mean 'ADDRESS_KIND'?)" in error.msg
    assert "Valid options: ADDRESS_KIND, FORMAT." in error.msg


def test_an_inherited_declaration_covers_subclasses(settings):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "teams": {
                "BACKEND": "channels.chat.TeamsWebhookChannel",
                "OPTIONS": {"TIMEOUT": 5, "ALLOWED_HOSTS": ["example.com"], "SECRET": "x"},
            },
        },
    }
    [error] = check_channels()
    assert error.id == "notify.E008"
    assert "'SECRET'" in error.msg
    assert (
        "Valid options: ALLOWED_HOSTS, ALLOW_HTTP, CACHE, COOL_DOWN, FAILURE_RATE, FAILURE_THRESHOLD,"
        " MINIMUM_CALLS, TIMEOUT, WINDOW." in error.msg
    )


def test_a_failover_provider_with_an_unknown_option_fails_at_start_up(settings):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "email": {
                "BACKEND": "channels.failover.FailoverChannel",
                "OPTIONS": {
                    "PROVIDERS": [
                        {
                            "BACKEND": "channels.email.EmailChannel",
                            "OPTIONS": {"MAILER": "default"},
                        },
                        {"BACKEND": "channels.email.EmailChannel", "OPTIONS": {"MAILR": "x"}},
                    ]
                },
            },
        },
    }
    [error] = check_channels()
    assert error.id == "notify.E006"
    assert "PROVIDERS[1]['OPTIONS']" in error.msg
    assert "did you mean 'MAILER'?" in error.msg


def test_a_channel_without_a_declaration_is_not_checked(settings):
    class Legacy(Channel):
        pass

    assert Legacy.unknown_options({"ANYTHING": 1}) == []


# -- the secret key ---------------------------------------------------------------------


def test_no_secret_key_fails_at_start_up(settings):
    settings.SECRET_KEY = ""
    [error] = check_secret_key()
    assert error.id == "notify.E009"
    assert "DJANGO_SECRET_KEY" in error.hint


def test_a_secret_key_passes(settings):
    settings.SECRET_KEY_IS_EPHEMERAL = False  # configured (DJANGO_SECRET_KEY), not made up
    assert check_secret_key() == []


def test_site_url_outside_allowed_hosts_warns(settings):
    settings.ALLOWED_HOSTS = ["notify.example.com"]
    settings.NOTIFY = {**settings.NOTIFY, "SITE_URL": "http://127.0.0.1:8123"}
    [warning] = check_site_url_host()
    assert warning.id == "notify.W010" and "'127.0.0.1'" in warning.msg
    settings.NOTIFY = {**settings.NOTIFY, "SITE_URL": "https://notify.example.com"}
    assert check_site_url_host() == []
