"""Ignores SIGTERM and starts a grandchild that ignores it too, then sleeps.

Prints `child <pid>` and `grandchild <pid>` once both ignore SIGTERM.
"""

import os
import signal
import subprocess
import sys
import time

IGNORE_AND_SLEEP = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"
)

signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", IGNORE_AND_SLEEP], stdout=subprocess.PIPE)
assert grandchild.stdout is not None
grandchild.stdout.readline()
print(f"child {os.getpid()}")
print(f"grandchild {grandchild.pid}")
time.sleep(600)
