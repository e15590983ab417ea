# The delivery-health dashboard and /metrics count index ranges instead of
# reading rows (notify.observability.queries): a million deliveries in well
# under a second per chart (BENCHMARKS.md, "Dashboard").
#
# delivery_stats_idx replaces delivery_status_idx (its first two columns), so
# fan-out maintains as many b-trees as before; the two partial indexes only
# hold retried and held deliveries. On PostgreSQL the indexes are built
# CONCURRENTLY, without blocking writes to a large outbox.

from django.db import migrations, models


class AddIndexOnline(migrations.AddIndex):
    """``CREATE INDEX CONCURRENTLY`` on PostgreSQL, a plain ``CREATE INDEX`` elsewhere."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.add_index(model, self.index, concurrently=True)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.remove_index(model, self.index, concurrently=True)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("notify", "0003_wave2"),
    ]

    operations = [
        AddIndexOnline(
            model_name="delivery",
            index=models.Index(
                fields=["status", "channel", "provider", "skip_reason", "created_at"],
                name="delivery_stats_idx",
            ),
        ),
        migrations.RemoveIndex(
            model_name="delivery",
            name="delivery_status_idx",
        ),
        AddIndexOnline(
            model_name="delivery",
            index=models.Index(
                condition=models.Q(("attempts__gt", 1)),
                fields=["created_at", "status", "channel", "attempts"],
                name="delivery_retried_idx",
            ),
        ),
        AddIndexOnline(
            model_name="delivery",
            index=models.Index(
                condition=models.Q(("hold_reason__gt", "")),
                fields=["created_at", "hold_reason", "status"],
                name="delivery_held_idx",
            ),
        ),
    ]
