"""An index on group memberships by (group, user): fan-out reads a group's
members in pages of ascending user id (``DatabaseDirectory.group_member_ids``).
Without it each page sorted every remaining member of the group (SQLite: a
temporary b-tree per page, quadratic in the group's size); with it a page is
one index range. The table is ``django.contrib.auth``'s (the user model's
``groups`` through table), so the index is added with the schema editor
rather than declared on one of our models."""

from django.conf import settings
from django.db import migrations, models

INDEX_NAME = "notify_group_members_idx"


def memberships(apps):
    app_label, model_name = settings.AUTH_USER_MODEL.split(".")
    return apps.get_model(app_label, model_name)._meta.get_field("groups").remote_field.through


def add_index(apps, schema_editor):
    through = memberships(apps)
    group = through._meta.get_field("group").name
    user = [f.name for f in through._meta.fields if f.name not in ("id", group)][0]
    schema_editor.add_index(through, models.Index(fields=[group, user], name=INDEX_NAME))


def remove_index(apps, schema_editor):
    through = memberships(apps)
    schema_editor.remove_index(through, models.Index(fields=["group"], name=INDEX_NAME))


class Migration(migrations.Migration):
    dependencies = [
        ("notify", "0011_email_layout"),
        ("auth", "0012_alter_user_first_name_max_length"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(add_index, remove_index)]
