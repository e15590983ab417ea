"""Provider webhooks: delivery reports in, ``notify.status.apply_status`` out."""
