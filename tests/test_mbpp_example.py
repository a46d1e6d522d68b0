"""`mbpp-example`: MBPP's tasks with the first assert shown as a HumanEval-style `>>>` example,
judged on every assert, in exactly `mbpp`'s train/dev/test parts; `mbpp` itself unchanged."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from evaluators.datasets import DatasetError, first_example, load_benchmark, with_example
from evaluators.splits import Split, load_split, part_of, partition_of
from evaluators.task import Task

runner = CliRunner()


@pytest.fixture(scope="module")
def both() -> tuple[list[Task], list[Task]]:
    try:
        return load_benchmark("mbpp"), load_benchmark("mbpp-example")
    except DatasetError as e:
        pytest.skip(str(e))


def test_prompt_shows_the_first_assert_as_a_doctest(both) -> None:
    mbpp, example = both
    assert example[1].prompt == (
        "def count_Set_Bits(n: int) -> int:\n"
        '    """\n'
        "    Write a python function to count the number of set bits (binary digits with value 1) "
        "in a given number.\n"
        "    >>> count_Set_Bits(2)\n"
        "    1\n"
        '    """\n'
    )
    assert "\t" in mbpp[1].prompt and ">>>" not in mbpp[1].prompt  # mbpp as it was
    # expected outputs are written as Python prints them, as in HumanEval's docstrings
    assert ">>> check_value({'Cierra Vega': 12, " in example[0].prompt
    assert example[0].prompt.endswith("    False\n" + '    """\n')


def test_every_task_keeps_its_tests_entry_point_and_id_and_still_parses(both) -> None:
    mbpp, example = both
    assert [t.task_id for t in example] == [t.task_id for t in mbpp]
    for plain, shown in zip(mbpp, example, strict=True):
        assert (shown.tests, shown.entry_point) == (plain.tests, plain.entry_point)
        assert shown.benchmark == "mbpp-example"
        ast.parse(shown.prompt + "    pass\n")
        call, expected = first_example(plain)
        assert f"    >>> {call}\n    {expected}\n" in shown.prompt


def test_every_task_is_in_the_same_part_under_both_names(both) -> None:
    mbpp, _ = both
    assert partition_of("mbpp-example") == partition_of("mbpp")
    for task in mbpp:
        assert part_of("mbpp-example", task.task_id) == part_of("mbpp", task.task_id)
    for part, _ in partition_of("mbpp"):
        spec = Split("mbpp", part)
        ours = load_split(f"mbpp-example:{part}", include_held_out=spec.held_out)
        theirs = load_split(f"mbpp:{part}", include_held_out=spec.held_out)
        assert [t.task_id for t in ours] == [t.task_id for t in theirs]
    assert (
        len(load_split("mbpp-example:train")) == 237 and len(load_split("mbpp-example:dev")) == 81
    )


def test_other_asserts_show_their_condition() -> None:
    task = Task(
        "t/0",
        'def f(x):\n    """Odd?"""\n',
        "f",
        "def check(candidate):\n    assert not candidate(2)\n    assert candidate(3)\n",
        "unit",
    )
    assert first_example(task) == ("not f(2)", "True")
    assert (
        with_example(task).prompt == 'def f(x):\n    """Odd?\n    >>> not f(2)\n    True\n    """\n'
    )
    computed = Task(
        "t/1",
        'def g():\n    """"""\n',
        "g",
        "def check(candidate):\n    assert candidate() == 2 ** 3\n",
        "unit",
    )
    assert first_example(computed) == ("g()", "2 ** 3")


# Correct programs for three tasks, and one that reproduces only the visible example.
SOLUTIONS = {
    "mbpp_464_check_value": "def check_value(dict, n):\n    return all(v == n for v in dict.values())\n",
    "mbpp_224_count_Set_Bits": "def count_Set_Bits(n):\n    return bin(n).count('1')\n",
    "mbpp_607_find_literals": (
        "import re\n\ndef find_literals(text, pattern):\n"
        "    m = re.search(pattern, text)\n    return (m.group(0), m.start(), m.end())\n"
    ),
}
ONLY_THE_EXAMPLE = "def count_Set_Bits(n):\n    return 1 if n == 2 else 0\n"


@pytest.mark.docker
def test_scored_on_all_asserts_in_the_sandbox(tmp_path: Path, both) -> None:
    lines = [
        json.dumps({"task_id": tid, "solution": program}) for tid, program in SOLUTIONS.items()
    ]
    lines.append(json.dumps({"task_id": "mbpp_224_count_Set_Bits", "solution": ONLY_THE_EXAMPLE}))
    samples = tmp_path / "s.jsonl"
    samples.write_text("\n".join(lines) + "\n")
    result = runner.invoke(
        app, ["score", "--benchmark", "mbpp-example", str(samples), "--workers", "2", "--k", "1"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in Path(f"{samples}_results.jsonl").read_text().splitlines()]
    assert [r["passed"] for r in rows] == [True, True, True, False]
    assert rows[3]["result"].startswith("failed")
    summary = json.loads(Path(f"{samples}_summary.json").read_text())
    assert summary["benchmark"] == "mbpp-example" and summary["verdicts"]["passed"] == 3
