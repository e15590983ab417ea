"""Channel instances built from ``NOTIFY["CHANNELS"]``."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.utils.module_loading import import_string

from channels.base import Channel, ChannelConfigurationError
from notify import conf


def channel_aliases() -> list[str]:
    return list(conf.get("CHANNELS"))


def channel_class(alias: str) -> type[Channel]:
    config = conf.get("CHANNELS").get(alias)
    if config is None:
        raise ChannelConfigurationError(
            f"No channel '{alias}' in NOTIFY['CHANNELS'] (configured: {', '.join(conf.get('CHANNELS'))})."
        )
    try:
        return import_string(config["BACKEND"])
    except (ImportError, KeyError) as exc:
        raise ChannelConfigurationError(
            f"NOTIFY['CHANNELS']['{alias}']['BACKEND'] must be the dotted path of a Channel: {exc}"
        ) from exc


def build_channel(alias: str) -> Channel:
    """A new instance (one per worker thread and batch: instances hold connections)."""
    cls = channel_class(alias)  # raises for an unknown alias
    return cls(alias, **(conf.get("CHANNELS")[alias].get("OPTIONS") or {}))


@cache
def _describe(alias: str, backend: str) -> tuple[str | None, str]:
    channel = build_channel(alias)
    return channel.address_kind, channel.message_format


def describe(alias: str) -> tuple[str | None, str]:
    """(address kind, message format) of a channel alias; cached per config."""
    config = conf.get("CHANNELS").get(alias)
    if config is None:
        raise ChannelConfigurationError(f"No channel '{alias}' in NOTIFY['CHANNELS'].")
    return _describe(alias, repr(config))


def concurrency_problem(alias: str, config: Any) -> str:
    """Why a channel entry's ``CONCURRENCY`` cannot work; ``""`` when it can."""
    if not isinstance(config, dict) or "CONCURRENCY" not in config:
        return ""
    value = config["CONCURRENCY"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return (
            f"NOTIFY['CHANNELS']['{alias}']['CONCURRENCY'] must be a whole number of "
            f"sends in flight, at least 1 (got {value!r})."
        )
    return ""
