"""Starts a long sleeper in its process group, prints `left <pid>`, and exits at once."""

import subprocess
import sys

sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(f"left {sleeper.pid}")
