"""The "ops" group edits workflow steps and reads workflow runs (rules/ops.py)."""

from django.db import migrations


def reset_ops_group(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    from rules.ops import ensure_ops_group

    # The new models' permissions are normally made after the whole migrate run.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    ensure_ops_group(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("rules", "0005_workflow_steps"),
        ("notify", "0011_workflows"),
    ]

    operations = [migrations.RunPython(reset_ops_group, migrations.RunPython.noop)]
