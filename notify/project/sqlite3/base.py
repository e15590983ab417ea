"""Django's SQLite backend, creating the database's folder when first opened.

The embedded default keeps its database in ``var/``; creating that folder here,
at the first connection, keeps the settings module free of side effects on disk
(``import notify.project.settings`` creates nothing).
"""

from pathlib import Path

from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        database = str(conn_params.get("database", ""))
        if database and not self.is_in_memory_db() and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        return super().get_new_connection(conn_params)
