"""The platform's foundation: settings, storage, identity, grants, secrets and audit.

Nothing here imports from an upper layer (gateway, cli, ...).
"""
