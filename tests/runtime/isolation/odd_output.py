"""Writes output that is not neat lines: both streams, CRLF, bad UTF-8, a huge line, no
final newline."""

import sys

out = sys.stdout.buffer
out.write(b"plain line\n")
out.flush()
sys.stderr.buffer.write(b"to stderr\n")
sys.stderr.flush()
out.write(b"windows line\r\n")
out.write(b"bad \xff\xfe bytes\n")
out.write(("\u00e9" * 100_000).encode() + b"\n")  # 200,000 bytes of two-byte characters
out.write(b"no newline at the end")
out.flush()
