"""Ends the way Python scripts end: a thread still working, an atexit handler, a message."""

import atexit
import sys
import threading
import time


def finish_late() -> None:
    time.sleep(0.2)
    print("thread finished")


threading.Thread(target=finish_late).start()
atexit.register(print, "atexit handler ran")
print("main finished")
sys.exit("leaving with a message")
