from notify import trigger
from notify.models import Delivery, Notification
from notify.models.status import Status
from notify.runtime.worker import run_until_idle


def test_event_to_inbox_and_sandbox_email(make_user, make_rule, django_capture_on_commit_callbacks):
    alice = make_user("alice", first_name="Alice")
    make_rule(condition="payload.total > 100")
    with django_capture_on_commit_callbacks(execute=True):
        event = trigger("order.shipped", {"order_id": "A1", "total": 150}, recipients=[alice])
    run_until_idle()
    statuses = dict(
        Delivery.objects.filter(notification__event=event).values_list("channel", "status")
    )
    assert statuses == {"email": Status.SENT, "inapp": Status.SENT}
    item = Notification.objects.get(event=event)
    assert item.title == "Order A1 shipped"
    assert item.inbox_at is not None
