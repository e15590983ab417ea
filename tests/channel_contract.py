"""The contract every channel keeps, as one test mixin run against each channel.

Like Django's ``BaseEmailBackendTests``: a test module subclasses
:class:`ChannelContract` and provides a ``channel_peer`` fixture, an object
that builds the channel under test and drives the local peer it talks to (an
SMTP server, an HTTP server speaking a provider's API...). The same tests then
run against every channel:

* a send returns a :class:`SendResult` with the provider's message id, and the
  peer received exactly that message;
* a temporary refusal from the peer raises :class:`TransientError`, and so does
  an unreachable peer; the channel is usable again afterwards;
* a permanent refusal raises :class:`PermanentError` (``InvalidRecipient`` for
  an address the provider says does not exist);
* several sends between one ``open`` and ``close`` share one connection, and
  a refusal in the middle of them does not cost a new one (unless the peer
  says ``shares_connections = False``: a provider SDK that opens a connection
  per request, like slack-sdk's urllib client; the rest of those tests still run).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Protocol

import pytest

from channels.base import (
    Channel,
    ChannelError,
    InvalidRecipient,
    OutgoingMessage,
    PermanentError,
    SendResult,
    TransientError,
)


@dataclass(frozen=True)
class Received:
    """One message as the peer saw it, in the contract's terms."""

    to: str
    message_id: str
    subject: str = ""
    text: str = ""


class ChannelPeer(Protocol):
    """What the contract needs to know about a channel and its peer."""

    good_address: str  # the peer accepts messages to it
    rejected_address: str  # the peer says it does not exist (permanently)
    # Optional, default True: False when the channel's transport cannot keep a
    # connection between requests, so connection counts are not asserted.
    shares_connections: bool

    def make_channel(self) -> Channel:
        """A new, unopened channel instance configured to talk to the peer."""

    def fail_next(self, count: int) -> None:
        """The peer answers the next ``count`` messages with a temporary error."""

    def down(self) -> None:
        """The peer stops listening."""

    def up(self) -> None:
        """The peer listens again, at the same address."""

    def received(self) -> list[Received]:
        """Every message the peer accepted, oldest first."""

    def connections(self) -> int:
        """How many connections (sessions) the peer has served."""


_delivery_ids = itertools.count(1)


def shares_connections(peer: ChannelPeer) -> bool:
    return getattr(peer, "shares_connections", True)


def outgoing(channel: Channel, to: str, **fields) -> OutgoingMessage:
    number = next(_delivery_ids)
    fields.setdefault("subject", f"Contract message {number}")
    fields.setdefault("text", f"Plain body {number}\n")
    fields.setdefault("html", f"<p>HTML body {number}</p>")
    return OutgoingMessage(delivery_id=number, channel=channel.alias, to=to, **fields)


class ChannelContract:
    """Mix into a ``Test...`` class that defines a ``channel_peer`` fixture."""

    def test_send_returns_the_provider_message_id(self, channel_peer: ChannelPeer):
        channel = channel_peer.make_channel()
        with channel:
            result = channel.send(outgoing(channel, channel_peer.good_address))
        assert isinstance(result, SendResult)
        assert result.provider == channel.provider_name != ""
        assert result.message_id
        received = channel_peer.received()
        assert [(r.to, r.message_id) for r in received] == [
            (channel_peer.good_address, result.message_id)
        ]

    def test_send_without_explicit_open_opens_and_close_releases(self, channel_peer):
        channel = channel_peer.make_channel()
        try:
            channel.send(outgoing(channel, channel_peer.good_address))
        finally:
            channel.close()
        channel.close()  # a second close is harmless
        assert len(channel_peer.received()) == 1

    def test_close_without_open_does_not_raise(self, channel_peer):
        channel_peer.make_channel().close()

    def test_temporary_refusal_raises_transient_error(self, channel_peer):
        channel = channel_peer.make_channel()
        channel_peer.fail_next(1)
        with channel:
            with pytest.raises(TransientError) as caught:
                channel.send(outgoing(channel, channel_peer.good_address))
            # The channel stays usable: the next send in the same batch goes through.
            result = channel.send(outgoing(channel, channel_peer.good_address))
        error = caught.value
        assert error.retryable
        assert error.provider == channel.provider_name
        assert str(error)  # says what the provider answered
        assert [r.message_id for r in channel_peer.received()] == [result.message_id]

    def test_unreachable_peer_raises_transient_error(self, channel_peer):
        channel = channel_peer.make_channel()
        channel_peer.down()
        try:
            with pytest.raises(TransientError), channel:
                channel.send(outgoing(channel, channel_peer.good_address))
        finally:
            channel_peer.up()
        with channel:  # the same instance recovers once the peer is back
            channel.send(outgoing(channel, channel_peer.good_address))
        assert len(channel_peer.received()) == 1

    def test_permanent_refusal_raises_permanent_error(self, channel_peer):
        channel = channel_peer.make_channel()
        with channel:
            with pytest.raises(PermanentError) as caught:
                channel.send(outgoing(channel, channel_peer.rejected_address))
            channel.send(outgoing(channel, channel_peer.good_address))
        error = caught.value
        assert isinstance(error, InvalidRecipient)
        assert isinstance(error, ChannelError) and not error.retryable
        assert error.code
        assert error.provider == channel.provider_name
        assert [r.to for r in channel_peer.received()] == [channel_peer.good_address]

    def test_sends_in_one_batch_share_one_connection(self, channel_peer):
        channel = channel_peer.make_channel()
        with channel:
            ids = [
                channel.send(outgoing(channel, channel_peer.good_address)).message_id
                for _ in range(5)
            ]
        assert len(set(ids)) == 5
        assert [r.message_id for r in channel_peer.received()] == ids
        if shares_connections(channel_peer):
            assert channel_peer.connections() == 1

    def test_refusals_keep_the_connection(self, channel_peer):
        """A provider that answered (even "no") is still connected: refusals in
        the middle of a batch cost no new connection."""
        channel = channel_peer.make_channel()
        channel_peer.fail_next(1)
        with channel:
            with pytest.raises(TransientError):
                channel.send(outgoing(channel, channel_peer.good_address))
            with pytest.raises(PermanentError):
                channel.send(outgoing(channel, channel_peer.rejected_address))
            channel.send(outgoing(channel, channel_peer.good_address))
        assert len(channel_peer.received()) == 1
        if shares_connections(channel_peer):
            assert channel_peer.connections() == 1

    def test_each_batch_opens_its_own_connection(self, channel_peer):
        channel = channel_peer.make_channel()
        for _ in range(2):
            with channel:
                channel.send(outgoing(channel, channel_peer.good_address))
                channel.send(outgoing(channel, channel_peer.good_address))
        assert len(channel_peer.received()) == 4
        if shares_connections(channel_peer):
            assert channel_peer.connections() == 2
