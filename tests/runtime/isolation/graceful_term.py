"""Cleans up and exits with 3 on SIGTERM; until then, sleeps."""

import signal
import sys
import time


def clean_up(signum: int, frame: object) -> None:
    print("cleaning up")
    sys.exit(3)


signal.signal(signal.SIGTERM, clean_up)
print("ready")
time.sleep(600)
