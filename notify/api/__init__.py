"""The HTTP API (``/api/v1/``): events in with API keys, the inbox with the session.

Plain Django views returning JSON, pydantic for validating what comes in; the
OpenAPI document at ``/api/v1/openapi.json`` describes it all.
"""
