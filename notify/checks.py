"""System checks: bad configuration fails at start-up and says what to set."""

from django.core import checks
from django.utils.module_loading import import_string

from notify import conf


@checks.register()
def check_channels(app_configs=None, **kwargs):
    errors = []
    channels = conf.get("CHANNELS")
    if not isinstance(channels, dict) or not channels:
        return [
            checks.Error(
                "NOTIFY['CHANNELS'] must be a non-empty dict of alias -> {'BACKEND': ..., 'OPTIONS': {...}}.",
                id="notify.E001",
            )
        ]
    for alias, config in channels.items():
        backend = config.get("BACKEND") if isinstance(config, dict) else None
        if not backend:
            errors.append(
                checks.Error(f"NOTIFY['CHANNELS']['{alias}'] has no 'BACKEND'.", id="notify.E002")
            )
            continue
        try:
            import_string(backend)
        except ImportError as exc:
            errors.append(
                checks.Error(
                    f"NOTIFY['CHANNELS']['{alias}']['BACKEND'] = {backend!r} cannot be imported: {exc}",
                    hint="Set it to the dotted path of a channels.base.Channel subclass.",
                    id="notify.E003",
                )
            )
    if not errors:
        errors += check_channel_options(channels)
    for alias in conf.get("DEFAULT_CHANNELS"):
        if alias not in channels:
            errors.append(
                checks.Error(
                    f"NOTIFY['DEFAULT_CHANNELS'] names '{alias}', which is not in NOTIFY['CHANNELS'].",
                    id="notify.E004",
                )
            )
    if conf.get("MAX_ATTEMPTS") < 1:
        errors.append(checks.Error("NOTIFY['MAX_ATTEMPTS'] must be at least 1.", id="notify.E005"))
    return errors


def check_channel_options(channels: dict) -> list:
    """Build each channel and let it say whether its options can work."""
    from channels.base import ChannelConfigurationError
    from notify.registry import build_channel

    errors = []
    for alias in channels:
        try:
            build_channel(alias).check_configuration()
        except ChannelConfigurationError as exc:
            errors.append(checks.Error(str(exc), id="notify.E006"))
        except Exception as exc:  # a constructor that cannot even start
            errors.append(
                checks.Error(
                    f"NOTIFY['CHANNELS']['{alias}'] cannot be built: {type(exc).__name__}: {exc}",
                    id="notify.E006",
                )
            )
    return errors
