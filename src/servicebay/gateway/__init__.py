"""The gateway: one ASGI app that authenticates, authorises, audits, then routes."""
