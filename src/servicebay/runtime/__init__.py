"""The runtime: deployment configs, bundles, scheduling and running (imports only core)."""
