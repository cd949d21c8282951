"""Tries to reach what a deployment's script must never reach, and prints how each went.

argv: the instance folder, another deployment's folder, the platform's pid. Prints one JSON
object: each attempt as "denied: <error>" or "allowed: <what it got>", and the environment.
"""

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

instance, other, platform_pid = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]


def attempt(action: Callable[[], object]) -> str:
    try:
        got = action()
    except OSError as error:
        return f"denied: {type(error).__name__}"
    return f"allowed: {got!r}"


attempts = {
    "read the master key": lambda: (instance / "master.key").read_bytes().hex(),
    "read the database": lambda: (instance / "servicebay.db").read_bytes().hex(),
    "write into the instance": lambda: (instance / "planted.txt").write_text("planted"),
    "list another deployment": lambda: os.listdir(other),
    "read another deployment's file": lambda: (other / "notes.txt").read_text(),
    "read the platform's environment": lambda: Path(f"/proc/{platform_pid}/environ").read_bytes(),
    "become root": lambda: os.setuid(0),
}
report = {name: attempt(action) for name, action in attempts.items()}
print(json.dumps({"attempts": report, "environ": dict(os.environ)}))
