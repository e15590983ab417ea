"""The end user's pages: the inbox, one-click unsubscribe, and the notification
settings page with its contact points and test sends.

Views stay thin. What the settings page validates and writes lives in plain
modules (``prefs``, ``contact_points``, ``sendtest``) that the HTTP API shares,
so a value means the same thing on the page and in JSON.
"""
