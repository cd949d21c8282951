"""A module of the deployment's own, imported by remember.py."""

IMPORTED = True
