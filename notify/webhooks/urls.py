from django.urls import path

from notify.webhooks import twilio
from notify.webhooks.closed import PostmarkTrackingView

urlpatterns = [
    # Postmark's delivery, bounce and spam-complaint webhooks (basic auth:
    # ANYMAIL["WEBHOOK_SECRET"], from NOTIFY_WEBHOOK_BASIC_AUTH; closed without it:
    # notify.webhooks.closed); the receiver is notify.webhooks.anymail.
    path(
        "anymail/postmark/tracking/",
        PostmarkTrackingView.as_view(),
        name="anymail-postmark-tracking",
    ),
    # Twilio's message status callbacks and inbound SMS (X-Twilio-Signature).
    path("twilio/status", twilio.status_callback, name="twilio-status"),
    path("twilio/inbound", twilio.inbound_message, name="twilio-inbound"),
]
