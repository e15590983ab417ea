"""Bump the rules revision whenever a rule changes, in the same transaction."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import ConfigRevision, Rule


@receiver([post_save, post_delete], sender=Rule, dispatch_uid="rules_revision_bump")
def bump_rules_revision(**kwargs) -> None:
    ConfigRevision.bump("rules")
