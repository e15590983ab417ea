from django.apps import AppConfig


class NotifyConfig(AppConfig):
    name = "notify"
    verbose_name = "Notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, signals  # noqa: F401

        # notify.unsubscribe(user, thing) next to the notify.unsubscribe links module.
        from .subscriptions import make_unsubscribe_callable
        from .webhooks import anymail  # noqa: F401 - connects the ESP tracking receiver

        make_unsubscribe_callable()
