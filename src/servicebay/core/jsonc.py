"""JSON with comments, as config files are written: `#` or `//` to the end of a line.

A comment starts only outside strings (`"http://host"` and `"#1"` are data). Comments
are blanked with spaces rather than cut out, so every other character keeps its line
and column, and a syntax error points into the text exactly as its author wrote it.
Beyond plain `json`, a key given twice in one object and the non-JSON constants
`NaN`/`Infinity` are errors: both would otherwise slip through and change meaning.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TOKEN = re.compile(
    r'"(?:[^"\\\r\n]|\\[^\r\n])*"?'  # a string (an unterminated one stops at the line end)
    r"|(?:#|//)[^\r\n]*"  # a comment, to the end of the line
)


@dataclass(eq=False)
class JsoncError(ValueError):
    """What is wrong, and where: 1-based line and column in the original text."""

    source: str
    message: str
    line: int | None = None
    column: int | None = None
    text: str | None = None
    """The offending line as written, comments and all."""

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}:{self.column}"
        return f"{where}: {self.message}"

    def excerpt(self) -> list[str]:
        """The line and a caret under the column, as a compiler shows them."""
        if self.text is None or self.line is None or self.column is None:
            return []
        gutter = f"{self.line} | "
        # Keep tabs under tabs so the caret lines up however the terminal expands them.
        lead = "".join(c if c == "\t" else " " for c in self.text[: self.column - 1])
        return [gutter + self.text, " " * (len(gutter) - 2) + "| " + lead + "^"]


def strip_comments(text: str) -> str:
    """`text` with each comment replaced by as many spaces: same length, same lines."""
    return _TOKEN.sub(lambda m: m[0] if m[0][0] == '"' else " " * len(m[0]), text)


def loads(text: str, *, source: str = "<text>") -> Any:
    """Parse JSON with comments; any problem is a JsoncError naming `source`.

    Lines may end in LF, CRLF or CR (a raw CR is never valid inside a JSON string).
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    plain = strip_comments(text)
    if not plain.strip():
        raise JsoncError(source, "no JSON value: the text is empty or only comments")
    try:
        return json.loads(
            plain,
            object_pairs_hook=lambda pairs: _unique(source, pairs),
            parse_constant=lambda name: _no_constant(source, name),
        )
    except json.JSONDecodeError as error:
        lines = text.split("\n")
        line = lines[error.lineno - 1] if error.lineno <= len(lines) else ""
        raise JsoncError(source, error.msg, error.lineno, error.colno, line) from None


def load(path: Path) -> Any:
    """Read and parse a UTF-8 file (a byte-order mark is allowed); errors name the path."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise JsoncError(source, f"cannot be read: {error.strerror or error}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - raw.rfind(b"\n", 0, error.start)
        raise JsoncError(source, "not UTF-8 text", line, column) from None
    return loads(text, source=source)


def _unique(source: str, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JsoncError(source, f"the key {key!r} appears twice in one object")
        result[key] = value
    return result


def _no_constant(source: str, name: str) -> Any:
    raise JsoncError(source, f"{name} is not JSON: write a number, or null")
