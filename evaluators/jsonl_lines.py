"""The lines of a JSONL file a user hands over, each decoded and parsed on its own, so any failure
is a message about one line (bytes that are not UTF-8, JSON nested past the parser's depth, bad
syntax), never a traceback from the middle of a read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


class LineError(ValueError):
    """Line `line` (1-based) of a JSONL file is not a JSON value; callers name their file."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        super().__init__(message)


def decode_line(line: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = raw[e.start : e.start + 1]
        raise LineError(line, f"not UTF-8 text (byte {bad!r} at byte {e.start + 1})") from None


def parse_line(line: int, text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LineError(line, f"invalid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise LineError(line, "invalid JSON (nested too deeply to parse)") from None


def json_lines(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) of every non-blank line; the first bad line raises."""
    with open(path, "rb") as f:
        for line, raw in enumerate(f, start=1):
            text = decode_line(line, raw)
            if text.strip():
                value = parse_line(line, text)
                yield line, value
