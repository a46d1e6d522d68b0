from scaffold.solve import dual_agreement, own_tests, solve, tests_passed


class ScriptedLLM:
    """Answers completions from a list, in order."""

    def __init__(self, answers):
        self.answers = list(answers)

    def complete(self, prompt, n=1, **_):
        return [self.answers.pop(0) for _ in range(n)]


TASK = {"prompt": "def half(x):\n", "entry_point": "half", "task_id": "t"}
TESTS = "4) == 2\nassert half(10) == 5\nassert half(3 == \nassert half(0) == 0\n"


def test_own_tests_keep_only_asserts_that_compile():
    tests = own_tests(TASK, ScriptedLLM([TESTS]))
    assert tests == ["assert half(4) == 2", "assert half(10) == 5", "assert half(0) == 0"]


def test_tests_passed_names_the_tests_and_survives_loops_and_broken_programs():
    tests = ["assert half(4) == 2", "assert half(10) == 5"]
    assert tests_passed("def half(x):\n    return x // 2\n", tests) == {0, 1}
    assert tests_passed("def half(x):\n    return 2\n", tests) == {0}
    assert tests_passed("def half(x):\n    return 5\n", tests) == {1}
    assert tests_passed("def half(x):\n    return 5\n", []) == set()
    assert tests_passed("def half(x):\n    while True: pass\n", tests) is None
    assert tests_passed("def half(x) return", tests) is None


def test_dual_agreement_weighs_groups_by_size_times_tests_passed():
    a, b, c = frozenset({0, 1, 2}), frozenset({0, 1}), frozenset()
    assert dual_agreement([b, a, b, b]) == 0  # 3 x 2 beats 1 x 3
    assert dual_agreement([b, a, a]) == 1  # 2 x 3 beats 1 x 2
    assert dual_agreement([None, a, b, a]) == 1
    assert dual_agreement([c, c, b]) == 2  # passing nothing scores nothing, however many agree
    assert dual_agreement([c, None, c]) == 0  # all tie at zero: the earliest that ran
    assert dual_agreement([None, None]) == 0


def test_solve_returns_the_best_groups_earliest_candidate():
    greedy, right = "    return 2\n", "    return x // 2\n"
    samples = ["    return x\n", right, right, "    return 0\n", right, greedy]
    llm = ScriptedLLM([greedy, *samples, TESTS])
    assert solve(TASK, llm) == "def half(x):\n" + right
    tied = ScriptedLLM([right, "    return x / 2\n", right, right, right, right, right, TESTS])
    assert solve(TASK, tied) == "def half(x):\n" + right
