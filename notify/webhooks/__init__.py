"""Provider webhooks: delivery reports in, ``notify.outbox.status_reports.apply_status`` out."""
