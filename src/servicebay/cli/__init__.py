"""The `bay` command: instance setup (`init`, `serve`, `demo`) and administration over HTTP.

Everything except `init`, `serve` and `demo` talks to a running gateway through its
`/api/v1` API, so the CLI does nothing an API caller could not.
"""
