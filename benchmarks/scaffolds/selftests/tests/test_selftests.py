from scaffold.solve import own_tests, solve, tests_passed


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


def test_tests_passed_counts_and_survives_loops_and_broken_programs():
    tests = ["assert half(4) == 2", "assert half(10) == 5"]
    assert tests_passed("def half(x):\n    return x // 2\n", tests) == 2
    assert tests_passed("def half(x):\n    return 2\n", tests) == 1
    assert tests_passed("def half(x):\n    while True: pass\n", tests) == -1
    assert tests_passed("def half(x) return", tests) == -1


def test_the_candidate_passing_most_tests_wins_ties_keep_greedy():
    greedy, right = "    return 2\n", "    return x // 2\n"
    llm = ScriptedLLM([greedy, "    return x\n", right, right, "    return 0\n", TESTS])
    assert solve(TASK, llm) == "def half(x):\n" + right
    tied = ScriptedLLM([right, "    return x / 2\n", right, right, right, TESTS])
    assert solve(TASK, tied) == "def half(x):\n" + right
