"""``/dev/outbox/`` shows an email as it would arrive: its headers, and its HTML
part rendered in a sandboxed iframe (no script, no access to the page)."""

from __future__ import annotations

from django.utils.html import escape

from channels import sandbox

HTML = (
    '<p>Hi <b>Ann</b></p><script>alert(1)</script><a href="http://x/unsubscribe/t/">Unsubscribe</a>'
)


def test_email_headers_and_html_in_a_sandboxed_iframe(admin_client, settings, tmp_path):
    settings.NOTIFY = {**settings.NOTIFY, "SANDBOX": True, "SANDBOX_DIR": str(tmp_path)}
    sandbox.record(
        {
            "channel": "email",
            "provider": "sandbox",
            "to": ["ann@example.com"],
            "from": "notify@example.com",
            "subject": "Shipped",
            "text": "Hi Ann",
            "html": HTML,
            "headers": {"List-Unsubscribe": "<http://x/unsubscribe/t/>"},
        },
        directory=str(tmp_path),
    )
    page = admin_client.get("/dev/outbox/").content.decode()  # staff only
    assert f'<iframe class="html-part" sandbox="" srcdoc="{escape(HTML)}"' in page
    assert "<script>alert(1)</script>" not in page
    assert '<th scope="row">List-Unsubscribe</th><td>&lt;http://x/unsubscribe/t/&gt;</td>' in page
    assert '<th scope="row">From</th><td>notify@example.com</td>' in page
