"""Prints `sleeper <pid>` and sleeps."""

import os
import time

print(f"sleeper {os.getpid()}")
time.sleep(600)
