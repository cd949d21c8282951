"""The `sql` kind: tables and named queries of a SQL database as a REST service."""
