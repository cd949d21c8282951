"""The `http` kind: routes of an upstream HTTP API, forwarded with a credential from a secret."""
