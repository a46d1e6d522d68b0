"""Parsing an agent's Python files on the host, where nothing an agent wrote may crash or exhaust it.

`ast.parse` runs in a child interpreter under memory and CPU limits of its own: a deep expression
(RecursionError), a parser stack overflow (MemoryError), a NUL byte (ValueError), or anything
that would take an interpreter down costs that child, never the loop. Its input is bounded before
(the size caps of `archive.paths`), so the child's limits are never what a real scaffold meets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping

PARSE_MEMORY_BYTES = 1 << 30
PARSE_CPU_S = 20
PARSE_WALL_S = 60.0

_CHILD = r"""
import ast, json, resource, sys
memory, cpu = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
for rel, text in json.loads(sys.stdin.buffer.read()).items():
    try:
        ast.parse(text, filename=rel)
        continue
    except SyntaxError as exc:
        why = f"{rel}:{exc.lineno}: syntax error: {exc.msg}"
    except (RecursionError, MemoryError, ValueError) as exc:
        detail = f": {str(exc)[:200]}" if str(exc) else ""
        why = f"{rel}: cannot be parsed ({type(exc).__name__}{detail})"
    sys.stdout.write(json.dumps(why))
    sys.exit(0)
sys.stdout.write("null")
"""


def syntax_problem(sources: Mapping[str, str]) -> str | None:
    """The first Python file of `sources` (path -> text) that does not parse, as one line, or
    None. Never raises for what the sources hold."""
    if not sources:
        return None
    names = ", ".join(sorted(sources))[:200]
    command = [sys.executable, "-I", "-S", "-c", _CHILD, str(PARSE_MEMORY_BYTES), str(PARSE_CPU_S)]
    try:
        proc = subprocess.run(
            command,
            input=json.dumps(dict(sources)).encode(),
            capture_output=True,
            timeout=PARSE_WALL_S,
        )
    except subprocess.TimeoutExpired:
        return f"{names}: parsing took longer than {PARSE_WALL_S:.0f} s"
    if proc.returncode == 0:
        try:
            why = json.loads(proc.stdout)
        except ValueError:
            why = False
        if why is None:
            return None
        if isinstance(why, str):
            return " ".join(why.split())  # one line
    tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
    return f"{names}: the parser failed (exit {proc.returncode}) {tail[0][:200]}".rstrip()
