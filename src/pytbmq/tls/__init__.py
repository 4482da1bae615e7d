"""TLS: server credentials, trust, SSL contexts, handshake diagnostics and reload."""
