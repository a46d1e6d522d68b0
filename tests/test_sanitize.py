"""The reply sanitizer on the replies instruct models really give: prose around several code
blocks, demos under `if __name__ == "__main__":`, asserts and prints at top level, helpers and
constants the entry point needs (kept), ones it does not (dropped), and no code at all."""

from __future__ import annotations

import ast
import time

from evaluators.sanitize import extract_code, reply_program, sanitize


def run(program: str) -> dict:
    """The namespace the program defines (these tests' programs are our own)."""
    namespace: dict = {}
    exec(program, namespace)
    return namespace


def defined(program: str) -> list[str]:
    """Top-level statements of a program, by kind and name (imports by their text)."""
    out = []
    for node in ast.parse(program).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            out.append(ast.unparse(node))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.append(
                f"def {node.name}" if not isinstance(node, ast.ClassDef) else f"class {node.name}"
            )
        elif isinstance(node, ast.Assign):
            out.append("= " + ",".join(ast.unparse(t) for t in node.targets))
        else:
            out.append(type(node).__name__)
    return out


PROSE_AND_BLOCKS = '''Sure! Here is the solution:

```python
import math
from typing import List


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(math.sqrt(n)) + 1))


def count_primes(xs: List[int]) -> int:
    """How many of xs are prime."""
    return sum(is_prime(x) for x in xs)
```

You can use it like this:

```python
print(count_primes([2, 3, 4]))
```
'''


def test_longest_block_of_prose_and_several_blocks_with_imports_and_helper() -> None:
    program = sanitize(PROSE_AND_BLOCKS, "count_primes")
    assert defined(program) == [
        "import math",
        "from typing import List",
        "def is_prime",
        "def count_primes",
    ]
    assert run(program)["count_primes"]([2, 3, 4, 9, 11]) == 3


MAIN_GUARD_AND_TESTS = """from collections import Counter

LIMIT = 10


def top(words, k):
    return [w for w, _ in Counter(words).most_common(min(k, LIMIT))]


def test_top():
    assert top(["a", "b", "a"], 1) == ["a"]


assert top(["x"], 1) == ["x"]
print(top(["x", "y", "y"], 1))
for k in range(3):
    print(top(["q"], k))

if __name__ == "__main__":
    import sys
    print(top(sys.argv, 2))
"""


def test_main_guard_top_level_asserts_prints_and_tests_are_dropped() -> None:
    program = sanitize(MAIN_GUARD_AND_TESTS, "top")
    assert defined(program) == ["from collections import Counter", "= LIMIT", "def top"]
    assert "__main__" not in program and "assert" not in program and "print" not in program
    assert run(program)["top"](["b", "a", "b"], 1) == ["b"]


def test_entry_point_dependencies_are_followed_transitively_and_others_dropped() -> None:
    reply = (
        "import re\n"
        "SEP = ','\n"
        "UNUSED = 3\n"
        "class Parser:\n"
        "    def parse(self, text):\n"
        "        return split(text)\n"
        "def split(text):\n"
        "    return re.split(SEP, text)\n"
        "def unrelated():\n"
        "    return UNUSED\n"
        "def main():\n"
        "    return solve('a,b')\n"
        "def solve(text):\n"
        "    return Parser().parse(text)\n"
    )
    program = sanitize(reply, "solve")
    assert defined(program) == ["import re", "= SEP", "class Parser", "def split", "def solve"]
    assert run(program)["solve"]("a,b") == ["a", "b"]
    # without an entry point every definition that returns stays (EvalPlus's rule)
    assert "def unrelated" in defined(sanitize(reply)) and "def main" in defined(sanitize(reply))


def test_helpers_without_return_decorators_and_tuple_constants_are_kept_when_needed() -> None:
    reply = (
        "import functools\n"
        "LOW, HIGH = 0, 9\n"
        "def swap(xs, i, j):\n"
        "    xs[i], xs[j] = xs[j], xs[i]\n"
        "@functools.lru_cache(maxsize=None)\n"
        "def fib(n):\n"
        "    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
        "def solve(xs):\n"
        "    swap(xs, 0, 1)\n"
        "    return [min(max(x, LOW), HIGH) for x in xs] + [fib(10)]\n"
    )
    program = sanitize(reply, "solve")
    assert defined(program) == [
        "import functools",
        "= (LOW, HIGH)",
        "def swap",
        "def fib",
        "def solve",
    ]
    assert "@functools.lru_cache" in program
    assert run(program)["solve"]([12, -1]) == [0, 9, 55]


def test_first_definition_of_a_name_wins_and_a_stray_statement_between_is_dropped() -> None:
    reply = "def f(x):\n    return x + 1\nf(2)\ndef f(x):\n    return x + 2\n"
    assert sanitize(reply, "f") == "def f(x):\n    return x + 1\n"


def test_a_cut_off_reply_keeps_its_longest_valid_part() -> None:
    # the token budget ran out in the middle of a second function
    reply = "def ok(x):\n    return x * 2\n\n\ndef half(x):\n    if x >\n"
    assert sanitize(reply, "ok") == "def ok(x):\n    return x * 2\n"
    assert extract_code(reply).startswith("def ok") and "half" not in extract_code(reply)


def test_a_reply_with_no_code_gives_an_empty_program() -> None:
    assert sanitize("I am sorry, I cannot help with that. ¯\\_(ツ)_/¯", "f") == ""
    assert sanitize("", "f") == ""
    # the judged program is then the reply itself: it fails, and the failure shows what it was
    assert reply_program("```\n```", "f") == "```\n```"
    assert reply_program("print(1)\n", "f") == "print(1)\n"


def test_reply_program_expands_tabs_as_evalplus_does() -> None:
    reply = "def f(x):\n\tif x:\n\t\treturn 1\n\treturn 0\n```\nThat is all."
    assert reply_program(reply, "f") == "def f(x):\n    if x:\n        return 1\n    return 0\n"


def test_a_reply_that_is_all_code_costs_one_parse_and_junk_stays_fast() -> None:
    code = "".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(200))
    assert sanitize(code, "f199") == "def f199(x):\n    return x + 199\n"
    junk = "\n".join("x = (" if i % 3 == 0 else f"foo bar baz {i}" for i in range(150))
    started = time.perf_counter()
    assert sanitize(junk, "f") == ""
    assert time.perf_counter() - started < 10
