from django.apps import AppConfig


class RulesConfig(AppConfig):
    name = "rules"
    verbose_name = "Rules"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import audit, bindings, signals  # noqa: F401  (revision bumps on edit)

        # One generic receiver per model signal; each consults the binding
        # index, so bindings edited in admin apply without reconnecting.
        bindings.connect_receivers()
        # Every change to rules, bindings, categories and templates on the record.
        audit.connect()
