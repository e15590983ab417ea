"""Admin for ops: the configuration they edit and the records they read."""

from notify.admin import layouts, site  # noqa: F401 - registers the ModelAdmins
