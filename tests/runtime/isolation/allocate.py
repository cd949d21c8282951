"""Allocates argv[1] megabytes at once."""

import sys

block = bytearray(int(sys.argv[1]) * 1024 * 1024)
print(f"allocated {len(block)} bytes")
