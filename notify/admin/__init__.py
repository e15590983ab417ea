"""Admin for ops: the configuration they edit and the records they read."""

from notify.admin import (  # noqa: F401 - each registers its ModelAdmins
    layouts,
    site,
    workflows,
)
