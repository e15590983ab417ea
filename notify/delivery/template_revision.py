"""Bump the templates revision when ops edit a template, in the same transaction."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from notify.models import EmailLayout, MessageTemplate
from rules.models import ConfigRevision


@receiver([post_save, post_delete], sender=MessageTemplate, dispatch_uid="templates_revision_bump")
@receiver([post_save, post_delete], sender=EmailLayout, dispatch_uid="layouts_revision_bump")
def bump_templates_revision(**kwargs) -> None:
    ConfigRevision.bump("templates")
