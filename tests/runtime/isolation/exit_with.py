"""Ends as argv[1] says: an exit code, `abort` (SIGABRT) or `raise` (an uncaught error)."""

import os
import sys

how = sys.argv[1]
print(f"ending with {how}")
if how == "abort":
    os.abort()
if how == "raise":
    print(1 / 0)
sys.exit(int(how))
