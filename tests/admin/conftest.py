"""Fixtures for the admin tests: a signed-in superuser's browser page and
whole-page screenshots, shared with the rules browser tests."""

from tests.pages.test_browser_rules import admin_page, shot  # noqa: F401 -- fixtures
