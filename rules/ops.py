"""The "ops" permission group: edits rules (and their workflow steps), signal bindings, categories and
message templates, reads the audit log and workflow runs, and nothing else.

Created by the data migration ``rules.0004_ops_group`` and reset with
``python manage.py notify ops-group`` (idempotent: the group ends up with
exactly these permissions). Give a person the group and ``is_staff``.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps as global_apps

OPS_GROUP = "ops"
CRUD = ("add", "change", "delete", "view")
OPS_PERMISSIONS: tuple[tuple[str, str, str], ...] = (
    *(("rules", "rule", action) for action in CRUD),
    *(("rules", "signalbinding", action) for action in CRUD),
    *(("rules", "workflowstep", action) for action in CRUD),
    ("notify", "workflowrun", "view"),
    ("rules", "auditentry", "view"),
    *(("notify", "category", action) for action in CRUD),
    *(("notify", "messagetemplate", action) for action in CRUD),
)


def ensure_ops_group(apps: Any = global_apps) -> tuple[Any, list[str]]:
    """Create or reset the group; return it and the permissions that were
    missing from the database (none once every app has migrated)."""
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=OPS_GROUP)
    wanted, missing = [], []
    for app_label, model, action in OPS_PERMISSIONS:
        codename = f"{action}_{model}"
        permission = Permission.objects.filter(
            content_type__app_label=app_label, codename=codename
        ).first()
        if permission is None:
            missing.append(f"{app_label}.{codename}")
        else:
            wanted.append(permission)
    group.permissions.set(wanted)
    return group, missing
