"""Put the SDK where a script can import it, without installing anything into its venv.

A deployment's virtual environment holds only its own requirements; the runner puts the
directory `stage_sdk` fills on the script's PYTHONPATH. Only the SDK's files are copied
(they import nothing but the standard library), never the server around them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
"""The installed `servicebay` package, the source of the copies."""

SHIM = "internal_sdk.py"
_SHIM_TEXT = '''"""The SDK under the article's name: `from internal_sdk import webhook_response`."""

from servicebay import Client
from servicebay.webhook import request, webhook_response

__all__ = ["Client", "request", "webhook_response"]
'''


def sdk_files() -> list[str]:
    """The SDK's files, relative to the `servicebay` package."""
    subpackage = sorted(path.name for path in (PACKAGE / "sdk").glob("*.py"))
    return ["__init__.py", "webhook.py", *(f"sdk/{name}" for name in subpackage)]


def stage_sdk(dest: Path) -> Path:
    """Copy the SDK into `dest` (as `dest/servicebay/...` and `dest/internal_sdk.py`).

    Returns `dest`, the directory for PYTHONPATH; its own mode is the caller's. What is
    staged in it is world-readable (scripts may run as another user), and each file is
    written whole and renamed into place, so staging again over a directory in use never
    shows a half-written module.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for directory in (dest / "servicebay", dest / "servicebay" / "sdk"):
        directory.mkdir(exist_ok=True)
        directory.chmod(0o755)
    for relative in sdk_files():
        _write(dest / "servicebay" / relative, (PACKAGE / relative).read_bytes())
    _write(dest / SHIM, _SHIM_TEXT.encode())
    return dest


def _write(target: Path, content: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(content)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
