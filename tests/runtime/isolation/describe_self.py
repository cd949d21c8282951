"""Prints, as JSON, what the script's process looks like from inside."""

import contextlib
import json
import os
import resource
from pathlib import Path

Path("made-by-the-script.txt").write_text("mine")
descriptors = {}
for fd in os.listdir("/proc/self/fd"):
    # The descriptor listdir used is closed by now: it is the one link that cannot be read.
    with contextlib.suppress(FileNotFoundError):
        descriptors[fd] = os.readlink(f"/proc/self/fd/{fd}")
print(
    json.dumps(
        {
            "uid": os.getuid(),
            "gid": os.getgid(),
            "groups": os.getgroups(),
            "pid": os.getpid(),
            "process_group": os.getpgid(0),
            "cwd": os.getcwd(),
            "environ": dict(os.environ),
            "descriptors": descriptors,
            "new_file_mode": oct(os.stat("made-by-the-script.txt").st_mode & 0o777),
            "limits": {
                name: resource.getrlimit(getattr(resource, f"RLIMIT_{name.upper()}"))
                for name in ("as", "core", "nproc")
            },
        }
    )
)
