"""The repair knob: a program that fails its visible example is shown to the model with what the
example returned, and the fix is kept only if it does better. A scripted model stands in.

An agent whose settings no longer have the knob (it rewrote its solve) has nothing here to test."""

from scaffold import settings
from scaffold import solve as solve_module
from tests.test_retry import GREEDY, PROMPT, RIGHT, TASK, WRONG, knobs_set

HAS_REPAIR = hasattr(settings, "REPAIR_ROUNDS") and hasattr(solve_module, "run_examples")


def solve(task, llm):
    return solve_module.solve(task, llm)


def first_failure(program, prompt):
    return solve_module.run_examples(program, prompt)[1]


class RepairingModel:
    """Answers WRONG to the task; to a repair request, the next of `fixes`."""

    def __init__(self, fixes):
        self.fixes = list(fixes)
        self.shown = []  # the repair requests' last user message

    def chat(self, messages, temperature=0.0, n=1, **_):
        users = [m["content"] for m in messages if m["role"] == "user"]
        if len(users) == 1:
            return [WRONG] * n
        self.shown.append(users[-1])
        assert messages[-2]["role"] == "user" and messages[-1]["role"] == "assistant"
        assert "a - b" in messages[-3]["content"]  # the failing program is shown back
        return [self.fixes.pop(0)] * n

    def complete(self, prompt, **_):
        raise AssertionError("instruct tasks do not call complete")


def test_a_failing_example_is_shown_and_the_fix_kept():
    if not HAS_REPAIR:
        return
    with knobs_set(**{**GREEDY, "REPAIR_ROUNDS": 2, "PROTOCOL": "instruct"}):
        model = RepairingModel([RIGHT])
        assert "a + b" in solve(TASK, model)
    assert len(model.shown) == 1  # fixed in one round: the second is not asked for
    assert "`add(1, 2)` returned `-1`, expected `3`" in model.shown[0], model.shown[0]


def test_a_fix_that_is_no_better_is_dropped_and_ends_the_rounds():
    if not HAS_REPAIR:
        return
    with knobs_set(**{**GREEDY, "REPAIR_ROUNDS": 3, "PROTOCOL": "instruct"}):
        model = RepairingModel(["def add(a, b):\n    return a * b\n", RIGHT])
        assert "a - b" in solve(TASK, model)
    assert len(model.shown) == 1


def test_no_repair_by_default_or_when_the_example_passes():
    if not HAS_REPAIR:
        return
    with knobs_set(**{**GREEDY, "PROTOCOL": "instruct"}):
        model = RepairingModel([RIGHT])
        assert "a - b" in solve(TASK, model)  # the seed ships the knob off
    with knobs_set(**{**GREEDY, "REPAIR_ROUNDS": 2, "PROTOCOL": "instruct"}):
        model = RepairingModel([RIGHT])
        solve({**TASK, "prompt": PROMPT.replace("    3\n", "    -1\n")}, model)
    assert model.shown == []


def test_a_crash_is_described_too():
    if not HAS_REPAIR:
        return
    assert "ZeroDivisionError" in first_failure("def add(a, b):\n    return 1 / 0\n", PROMPT)
    assert "NameError" in first_failure("raise NameError('x')\n", PROMPT)
    assert first_failure(RIGHT, PROMPT) is None
    assert "did not finish" in first_failure(
        "def add(a, b):\n    while True:\n        pass\n", PROMPT
    )
