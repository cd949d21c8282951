"""Services: named REST surfaces mounted at `/{service}/...`.

A service answers `ServiceCall`s; the gateway authenticates, asks the service which
permission a call needs, decides, audits, and only then lets the service run it.
"""
