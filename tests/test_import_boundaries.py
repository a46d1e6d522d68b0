"""The package boundaries docs/architecture.md documents, read off the source with `ast` (nothing
is imported), so an import across a closed boundary fails here rather than in review."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.scaffold.jobs import (
    BOOTSTRAP_SOURCE,
    CLIENT_MODULE,
    CLIENT_SOURCE,
    SANITIZE_MODULE,
    SANITIZE_SOURCE,
)

ROOT = Path(__file__).resolve().parents[1]

# What each part of the project may import of the project (itself always): the table in
# docs/architecture.md, "Packages and what each may import".
ALLOWED: dict[str, frozenset[str]] = {
    "lineage_files": frozenset(),
    "sandbox": frozenset(),
    "archive": frozenset(),
    "evaluators": frozenset({"sandbox", "lineage_files"}),
    "agent": frozenset({"archive", "evaluators", "sandbox", "lineage_files"}),
}
PROJECT = frozenset(ALLOWED)

MODEL_STACK = frozenset(
    {"torch", "transformers", "vllm", "safetensors", "tokenizers", "gguf", "accelerate", "ray"}
)
FORBIDDEN_THIRD_PARTY: dict[str, frozenset[str]] = {
    "sandbox": MODEL_STACK,
    "archive": MODEL_STACK | {"docker"},
    "evaluators": MODEL_STACK | {"docker"},
}

# Shipped into containers as plain files: the standard library and these neighbours only.
SEED = ROOT / "agent" / "scaffold" / "seed"
CONTAINER = ROOT / "sandbox" / "container"
STANDALONE: dict[Path, frozenset[str]] = {
    CONTAINER: frozenset(p.stem for p in CONTAINER.glob("*.py")),
    SEED: frozenset({"scaffold", "tests", CLIENT_MODULE, SANITIZE_MODULE}),
    ROOT / "agent" / "scaffold" / CLIENT_SOURCE.name: frozenset(),  # as lineage_llm.py
    ROOT / "evaluators" / SANITIZE_SOURCE.name: frozenset(),  # as lineage_sanitize.py
    BOOTSTRAP_SOURCE: frozenset({"scaffold"}),  # the job program, beside the agent's package
}


def sources(part: str) -> list[Path]:
    single = ROOT / f"{part}.py"
    return [single] if single.is_file() else sorted((ROOT / part).rglob("*.py"))


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in `path`, wherever it sits (a function
    body, `if TYPE_CHECKING:`); relative imports resolved against the file's package."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.lineno, node.module or ""
            else:
                base = package[: len(package) - node.level + 1]
                yield node.lineno, ".".join([*base, *([node.module] if node.module else [])])


def crossings(part: str) -> list[str]:
    """Every import in `part` of another part of the project that ALLOWED does not list, or of a
    third-party stack the part must not know, as `file:line: imports name`."""
    bad = []
    for path in sources(part):
        for line, module in imported(path):
            top = module.split(".")[0]
            closed = top in PROJECT and top != part and top not in ALLOWED[part]
            if closed or top in FORBIDDEN_THIRD_PARTY.get(part, ()):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    return bad


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_the_architecture_allows(part: str) -> None:
    assert sources(part), f"no sources found for {part}"
    bad = crossings(part)
    assert not bad, "imports across a closed boundary:\n" + "\n".join(bad)


def standalone_files(where: Path) -> list[Path]:
    return [where] if where.is_file() else sorted(where.rglob("*.py"))


@pytest.mark.parametrize("where", sorted(STANDALONE), ids=lambda p: str(p.relative_to(ROOT)))
def test_code_shipped_into_containers_imports_only_the_standard_library(where: Path) -> None:
    neighbours = STANDALONE[where]
    assert standalone_files(where), f"nothing found at {where}"
    bad = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in standalone_files(where)
        for line, module in imported(path)
        if (top := module.split(".")[0]) not in sys.stdlib_module_names and top not in neighbours
    ]
    assert not bad, "container code importing beyond the standard library:\n" + "\n".join(bad)


def test_a_forbidden_import_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself can fail: a sandbox module importing the archive (beside a relative
    import that stays home), evaluators importing the agent for type hints only, an archive
    module importing torch inside a function."""
    for part, text in {
        "sandbox": "from . import y\nfrom archive import Archive\n",
        "evaluators": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import agent.cli\n",
        "archive": "def f():\n    import torch\n",
    }.items():
        (tmp_path / part / "sub").mkdir(parents=True)
        (tmp_path / part / "sub" / "x.py").write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert crossings("sandbox") == ["sandbox/sub/x.py:2: imports archive"]
    assert crossings("evaluators") == ["evaluators/sub/x.py:3: imports agent.cli"]
    assert crossings("archive") == ["archive/sub/x.py:2: imports torch"]
