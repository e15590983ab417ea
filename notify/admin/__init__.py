"""Admin for ops: the configuration they edit and the records they read."""

from notify.admin import (
    site,  # noqa: F401 - registers the ModelAdmins
    workflows,  # noqa: F401 - registers the workflow runs' admin
)
