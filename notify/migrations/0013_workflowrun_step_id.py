from django.db import migrations, models


def remember_steps(apps, schema_editor):
    """Open runs remember the step they are on by id (position as it is now)."""
    WorkflowRun = apps.get_model("notify", "WorkflowRun")
    WorkflowStep = apps.get_model("rules", "WorkflowStep")
    steps: dict[int, list[int]] = {}
    for rule_id, pk in WorkflowStep.objects.order_by("rule_id", "position", "id").values_list(
        "rule_id", "pk"
    ):
        steps.setdefault(rule_id, []).append(pk)
    for run in WorkflowRun.objects.filter(state__in=["waiting", "running"]).only(
        "pk", "rule_id", "step"
    ):
        ids = steps.get(run.rule_id, [])
        if run.step < len(ids):
            WorkflowRun.objects.filter(pk=run.pk).update(step_id=ids[run.step])


class Migration(migrations.Migration):
    dependencies = [
        ("notify", "0012_group_members_index"),
        ("rules", "0005_workflow_steps"),
    ]

    operations = [
        migrations.AddField(
            model_name="workflowrun",
            name="step_id",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.RunPython(remember_steps, migrations.RunPython.noop),
        migrations.RemoveIndex(model_name="workflowrun", name="workflow_run_due_idx"),
        migrations.AddIndex(
            model_name="workflowrun",
            index=models.Index(
                condition=models.Q(("state__in", ["waiting", "running"])),
                fields=["due_at", "id"],
                name="workflow_run_due_idx",
            ),
        ),
        migrations.AlterField(
            model_name="workflowsteplog",
            name="decision",
            field=models.CharField(
                choices=[
                    ("sent", "Sent"),
                    ("skipped", "Skipped"),
                    ("waited", "Waited"),
                    ("collected", "Collected"),
                    ("cancelled", "Cancelled"),
                    ("failed", "Failed"),
                    ("moved", "Moved"),
                ],
                max_length=10,
            ),
        ),
    ]
