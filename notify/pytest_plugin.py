"""pytest fixtures for applications that use notify (and for notify's own tests).

Installed with notify, this plugin is loaded by pytest on its own (the
``pytest11`` entry point in ``pyproject.toml``); from a source checkout, add
``pytest_plugins = ["notify.pytest_plugin"]`` to your root ``conftest.py``.

``notify_outbox``: every channel captured, events processed synchronously; see
``notify.testing.NotifyOutbox`` for what it holds and asserts::

    def test_shipping_notifies_the_customer(notify_outbox, customer):
        ship(order)
        notify_outbox.assert_notified(customer, "order.shipped", channels=["email", "inapp"])

The fixture is ``notify.testing.capture_notifications()`` around the test,
and uses the database (``db``; a ``django_db(transaction=True)`` mark or
``transactional_db`` still makes it transactional): what is still due when the
test ends is processed and captured before the database is rolled back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from notify.testing import NotifyOutbox


@pytest.fixture
def notify_outbox(db: None) -> Iterator[NotifyOutbox]:
    """What notify would have sent during the test, per channel."""
    # Imported here: pytest loads plugins before pytest-django sets Django up.
    from notify.testing import capture_notifications

    with capture_notifications() as outbox:
        yield outbox
