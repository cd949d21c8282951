"""Prints `waiting`, then waits until the file argv[1] exists, then prints `released`.

It only gets released if its first line reached the platform while it was running."""

import os
import sys
import time

print("waiting")
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
print("released")
