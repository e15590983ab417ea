"""Local protocol peers the integration tests talk to over real sockets."""
