from django.apps import AppConfig


class NotifyConfig(AppConfig):
    name = "notify"
    verbose_name = "Notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at the top: they need the app registry to be ready.
        from notify import checks  # noqa: F401 - registers the system checks
        from notify.delivery import layouts as _layouts  # noqa: F401 - the email layout checks
        from notify.delivery import template_revision  # noqa: F401 - connects its receivers
        from notify.inbox import checks as _bell  # noqa: F401 - the bell's settings
        from notify.observability import checks as _  # noqa: F401 - the security checks too
        from notify.outbox import checks as _claims  # noqa: F401 - the claim checks
        from notify.webhooks import anymail  # noqa: F401 - connects the ESP tracking receiver
