"""Prints its run id (from the environment) and its pid."""

import json
import os

print(json.dumps({"run": os.environ["BAY_RUN_ID"], "pid": os.getpid()}))
