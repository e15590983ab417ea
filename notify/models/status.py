"""A delivery's status: the outbox's own states, apart from the channel contract
(a channel returns a ``SendResult`` or raises; it never sets a status)."""


class Status:
    """Normalised delivery statuses; every provider maps its codes to these."""

    PENDING = "pending"  # due, waiting for a worker
    SENDING = "sending"  # claimed by a worker
    SENT = "sent"  # accepted by the provider
    DELIVERED = "delivered"  # the provider confirmed delivery
    FAILED = "failed"  # permanent error: not retried
    DEAD = "dead"  # transient errors until the last attempt
    SKIPPED = "skipped"  # preferences, address or suppression said no
    DIGEST = "digest"  # held for the user's digest
    BOUNCED = "bounced"  # the provider reported it undeliverable after accepting it
    CANCELLED = "cancelled"  # a reminder whose cancel condition held, or cancelled by the API

    FINAL = frozenset({SENT, DELIVERED, FAILED, DEAD, SKIPPED, BOUNCED, CANCELLED})
    CHOICES = [
        (PENDING, "pending"),
        (SENDING, "sending"),
        (SENT, "sent"),
        (DELIVERED, "delivered"),
        (FAILED, "failed"),
        (DEAD, "dead"),
        (SKIPPED, "skipped"),
        (DIGEST, "held for digest"),
        (BOUNCED, "bounced"),
        (CANCELLED, "cancelled"),
    ]
