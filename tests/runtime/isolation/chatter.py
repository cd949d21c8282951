"""Prints argv[1] numbered lines of argv[2] bytes each (newline included)."""

import sys

count, width = int(sys.argv[1]), int(sys.argv[2])
for number in range(count):
    print(f"{number:08d}".ljust(width - 1, "."))
