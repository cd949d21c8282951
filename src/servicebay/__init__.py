"""ServiceBay: every data source a permissioned REST service, one-command deploys."""

__version__ = "0.1.0"
