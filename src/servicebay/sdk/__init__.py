"""The SDK that scripts import: a client for ServiceBay's services and API.

Standard library only, and nothing of the server: deployed scripts run in virtual
environments that hold only their own requirements (`runtime/sdk_stage.py` copies
these files next to them).
"""

from servicebay.sdk.client import Client
from servicebay.sdk.errors import ApiError, ApiUnavailable, ConfigurationError

__all__ = ["ApiError", "ApiUnavailable", "Client", "ConfigurationError"]
