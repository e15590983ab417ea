"""``/settings/notifications/``: the settings page, its contact points and test
sends (namespace ``notify-settings``), included by ``notify/project/urls.py``."""

from django.urls import path

from notify.pages import contacts, settings
from notify.pages.throttle import throttled_page

app_name = "notify-settings"

urlpatterns = [
    path("", settings.notification_settings, name="page"),
    path("test/", throttled_page("send-test")(settings.send_test), name="test"),
    path("contacts/add/", contacts.add, name="contact-add"),
    path(
        "contacts/<int:point_id>/verify/",
        throttled_page("verify")(contacts.verify_code),
        name="contact-verify",
    ),
    path(
        "contacts/<int:point_id>/resend/",
        throttled_page("verify")(contacts.resend),
        name="contact-resend",
    ),
    path("contacts/<int:point_id>/primary/", contacts.make_primary, name="contact-primary"),
    path("contacts/<int:point_id>/remove/", contacts.remove, name="contact-remove"),
    path(
        "verify-email/<str:token>/",
        throttled_page("verify")(contacts.verify_email),
        name="verify-email",
    ),
]
