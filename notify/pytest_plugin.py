"""pytest fixtures for applications that use notify (and for notify's own tests).

Installed with notify, this plugin is loaded by pytest on its own (the
``pytest11`` entry point in ``pyproject.toml``); from a source checkout, add
``pytest_plugins = ["notify.pytest_plugin"]`` to your root ``conftest.py``.

``notify_outbox``: every channel captured, events processed synchronously; see
``notify.testing.NotifyOutbox`` for what it holds and asserts::

    def test_shipping_notifies_the_customer(notify_outbox, customer):
        ship(order)
        notify_outbox.assert_notified(customer, "order.shipped", channels=["email", "inapp"])

The test still needs the database (``db``, or ``@pytest.mark.django_db``),
like anything that stores events.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from notify.testing import NotifyOutbox


@pytest.fixture
def notify_outbox() -> Iterator[NotifyOutbox]:
    """What notify would have sent during the test, per channel."""
    # Imported here: pytest loads plugins before pytest-django sets Django up.
    from notify.testing import capture_notifications

    with capture_notifications() as outbox:
        yield outbox
