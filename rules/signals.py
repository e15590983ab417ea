"""Bump the configuration revisions when rules or signal bindings change, in
the same transaction, so every process rebuilds its index."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import ConfigRevision, Rule, SignalBinding, WorkflowStep


@receiver([post_save, post_delete], sender=WorkflowStep, dispatch_uid="steps_revision_bump")
@receiver([post_save, post_delete], sender=Rule, dispatch_uid="rules_revision_bump")
def bump_rules_revision(**kwargs) -> None:
    ConfigRevision.bump("rules")


@receiver([post_save, post_delete], sender=SignalBinding, dispatch_uid="bindings_revision_bump")
def bump_bindings_revision(**kwargs) -> None:
    ConfigRevision.bump("bindings")
