"""Provider failover with a circuit breaker per provider.

``FailoverChannel`` wraps several channels of one kind and sends each message
through the first that takes it::

    "email": {
        "BACKEND": "channels.failover.FailoverChannel",
        "OPTIONS": {
            "PROVIDERS": [
                {"BACKEND": "channels.email.EmailChannel", "OPTIONS": {"MAILER": "postmark"}},
                {"BACKEND": "channels.email.EmailChannel", "OPTIONS": {"MAILER": "smtp"}},
            ],
            "FAILURE_RATE": 0.7,  # failed share of a provider's recent calls that opens its breaker
            "MINIMUM_CALLS": 20,  # calls in the window (WINDOW, 60 s) before the rate counts
            "COOL_DOWN": 60,  # seconds a breaker stays open before one trial send
            "CACHE": "default",  # the CACHES alias holding the breakers' state
        },
    }

For one message, in provider order:

1. a provider whose breaker is open is skipped;
2. a :class:`TransientError` (time-out, 5xx, 429, our own rate limit) moves on
   to the next provider, in the same ``send`` call;
3. a :class:`PermanentError` is raised at once: a bad address is bad everywhere,
   and trying it on the secondary would only spam it;
4. success returns the provider's :class:`SendResult`, whose ``provider`` names
   who sent it, so the delivery records it;
5. when every provider failed or was skipped, a :class:`TransientError` says
   why for each, with the largest ``retry_after`` any of them gave.

A provider entry may carry ``NAME`` (default: the channel's ``provider_name``,
made unique) and, in its ``OPTIONS``, a ``RATE_LIMIT`` that the provider
channel applies itself (see :mod:`channels.ratelimit`). A ``RATE_LIMIT`` on the
failover channel caps all its providers together. Each provider channel gets
the alias ``"<alias>:<name>"``, which also names its default rate-limit bucket.

Breakers live in Django's cache, so every worker thread and process shares
them (Redis when several processes send; the embedded default's local-memory
cache serves its one process). A breaker per provider:

* **closed**: sends go through; each is counted in a sliding window of
  ``WINDOW`` seconds, a transient error as a failure, any answer from the
  provider (success or a permanent refusal) as a call that worked;
* **open**: once at least ``MINIMUM_CALLS`` calls in the window (formerly
  ``FAILURE_THRESHOLD``) failed at a rate of ``FAILURE_RATE`` or more, for
  ``COOL_DOWN`` seconds; the provider is not called (see :mod:`channels.breaker`);
* **half-open**: after the cool-down one worker wins a ``cache.add`` and sends
  one trial message; success closes the breaker, failure opens it again for
  another cool-down; other workers skip the provider while the trial runs.

Our own rate limit refusing a send says nothing about the provider's health,
so it does not count as a failure. If the cache fails, the breaker lets sends
through (and logs): losing failover is better than losing email.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .base import (
    Channel,
    ChannelConfigurationError,
    ChannelError,
    Deferred,
    OutgoingMessage,
    SendResult,
    TransientError,
    describe_unknown_options,
)
from .breaker import BREAKER_OPTIONS, CircuitBreaker, Gate, breaker_settings
from .ratelimit import RATE_LIMIT_OPTIONS, cache_named, parse_rate, throttle

__all__ = ["CircuitBreaker", "FailoverChannel", "Gate"]

log = logging.getLogger("channels.failover")


@dataclass(slots=True)
class Provider:
    name: str
    channel: Channel
    breaker: CircuitBreaker


class FailoverChannel(Channel):
    """Sends through the first provider whose breaker is closed and that takes it."""

    accepted_options = frozenset({"PROVIDERS"}) | BREAKER_OPTIONS | RATE_LIMIT_OPTIONS

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        configs = options.get("PROVIDERS")
        if not isinstance(configs, (list, tuple)) or not configs:
            raise ChannelConfigurationError(
                f"failover channel '{alias}': OPTIONS['PROVIDERS'] must be a non-empty list of "
                "{'BACKEND': ..., 'OPTIONS': {...}}."
            )
        breaker_kwargs = breaker_settings(f"failover channel '{alias}'", options)
        cache_alias = breaker_kwargs["cache_alias"]
        cache_named(cache_alias)  # an unknown alias fails now, not at the first send
        if options.get("RATE_LIMIT"):
            parse_rate(options["RATE_LIMIT"])
        self.providers: list[Provider] = []
        for index, config in enumerate(configs):
            channel, name = self._build(alias, index, config)
            breaker = CircuitBreaker(f"{alias}:{name}", **breaker_kwargs)
            self.providers.append(Provider(name, channel, breaker))
        first = self.providers[0].channel
        for provider in self.providers[1:]:
            other = provider.channel
            if (other.address_kind, other.message_format) != (
                first.address_kind,
                first.message_format,
            ):
                raise ChannelConfigurationError(
                    f"failover channel '{alias}': provider '{provider.name}' sends "
                    f"{other.message_format} to {other.address_kind} addresses, unlike "
                    f"'{self.providers[0].name}' ({first.message_format} to {first.address_kind})."
                )
        # Instance attributes: dispatch reads them from the instance.
        self.address_kind = first.address_kind
        self.message_format = first.message_format
        self.provider_name = self.providers[0].name

    def _build(self, alias: str, index: int, config: Any) -> tuple[Channel, str]:
        where = f"failover channel '{alias}', PROVIDERS[{index}]"
        if not isinstance(config, dict) or not config.get("BACKEND"):
            raise ChannelConfigurationError(
                f"{where} must be {{'BACKEND': ..., 'OPTIONS': {{...}}}}."
            )
        try:
            cls = import_string(config["BACKEND"])
        except ImportError as exc:
            raise ChannelConfigurationError(f"{where}: cannot import BACKEND: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Channel)):
            raise ChannelConfigurationError(f"{where}: BACKEND is not a channels.base.Channel.")
        if issubclass(cls, FailoverChannel):
            raise ChannelConfigurationError(f"{where}: a failover channel cannot nest another.")
        provider_options = dict(config.get("OPTIONS") or {})
        if provider_options.get("RATE_LIMIT"):
            parse_rate(provider_options["RATE_LIMIT"])
        channel = cls(f"{alias}:{index}", **provider_options)
        name = str(config.get("NAME") or channel.provider_name or f"provider{index}")
        if any(p.name == name for p in self.providers):
            name = f"{name}-{index}"
        channel.alias = f"{alias}:{name}"  # names its default rate-limit bucket too
        if isinstance(getattr(channel, "breaker", None), CircuitBreaker):
            channel.breaker = None  # this channel's breaker per provider decides
        return channel, name

    def check_configuration(self) -> None:
        """The options were checked when built; each provider checks its own,
        and reads no option it does not know (the top level is notify.E008's)."""
        for index, provider in enumerate(self.providers):
            channel = provider.channel
            where = f"failover channel '{self.alias}', PROVIDERS[{index}]['OPTIONS']"
            problem = describe_unknown_options(where, type(channel), channel.options)
            if problem:
                raise ChannelConfigurationError(problem)
            channel.check_configuration()

    def open(self) -> None:
        """Nothing: each provider opens lazily on its first send, so a secondary
        that is never needed costs no connection."""

    def close(self) -> None:
        for provider in self.providers:
            try:
                provider.channel.close()
            except Exception:  # close must not raise
                log.exception("closing provider %s of %s failed", provider.name, self.alias)

    def send(self, message: OutgoingMessage) -> SendResult:
        throttle(self)  # this channel's own RATE_LIMIT, over all providers
        failures: list[str] = []
        retry_after: list[float] = []
        last: ChannelError | None = None
        for provider in self.providers:
            gate = provider.breaker.allow()
            if not gate.allowed:
                failures.append(f"{provider.name}: circuit open")
                if gate.retry_after is not None:
                    retry_after.append(gate.retry_after)
                continue
            try:
                result = provider.channel.send(message)
            except Deferred as exc:  # our own rate limit, an inner breaker: not tried
                provider.breaker.release(gate)
                last = exc
            except TransientError as exc:
                provider.breaker.record_failure(gate)
                last = exc
            except ChannelError as exc:  # permanent: the provider answered, the message is bad
                provider.breaker.record_success(gate)
                exc.provider = provider.name
                raise
            except ImproperlyConfigured:  # ChannelConfigurationError too: for an operator
                raise
            except Exception as exc:  # a library bug or surprise: this provider failed
                log.exception("provider %s of %s raised unexpectedly", provider.name, self.alias)
                provider.breaker.record_failure(gate)
                last = TransientError(f"{type(exc).__name__}: {exc}", provider=provider.name)
            else:
                provider.breaker.record_success(gate)
                if result.provider != provider.name:
                    result = dataclasses.replace(result, provider=provider.name)
                return result
            last.provider = provider.name
            failures.append(f"{provider.name}: {last}")
            if getattr(last, "retry_after", None) is not None:
                retry_after.append(last.retry_after)
        raise TransientError(
            "no provider could send: " + "; ".join(failures),
            code=last.code if last is not None else "circuit_open",
            provider=(last.provider if last is not None else "") or self.provider_name,
            response=last.response if last is not None else None,
            retry_after=max(retry_after) if retry_after else None,
        )
