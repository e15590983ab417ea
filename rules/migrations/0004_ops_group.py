"""The "ops" permission group (see rules/ops.py)."""

from django.db import migrations


def create_ops_group(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    from rules.ops import ensure_ops_group

    # Permissions are normally made after the whole migrate run; this group
    # needs them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    ensure_ops_group(apps)


def remove_ops_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="ops").delete()


class Migration(migrations.Migration):

    dependencies = [
        ("rules", "0003_ops_engine"),
        ("notify", "0003_wave2"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_ops_group, remove_ops_group)]
