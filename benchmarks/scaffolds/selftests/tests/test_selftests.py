from scaffold.solve import chat_program, dual_agreement, own_tests, solve, tests_passed


class ScriptedLLM:
    """Answers completions from a list, in order."""

    def __init__(self, answers):
        self.answers = list(answers)

    def complete(self, prompt, n=1, **_):
        return [self.answers.pop(0) for _ in range(n)]


class ScriptedViews:
    """Answers each kind of call of `solve` (they arrive in any order, from threads)."""

    def __init__(self, greedy, chat, samples, tests):
        self.greedy, self.chat_reply, self.samples, self.tests = greedy, chat, samples, tests

    def complete(self, prompt, temperature=0.0, n=1, **_):
        if prompt.endswith("assert half("):
            return [self.tests]
        return [self.greedy] if temperature == 0 else self.samples[:n]

    def chat(self, messages, **_):
        assert "def half(x):" in messages[-1]["content"]
        return [self.chat_reply]


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
    chat = "Here it is:\n```python\ndef half(x):\n" + right + "```\n"
    llm = ScriptedViews(greedy, chat, ["    return x\n", right], TESTS)
    assert solve(TASK, llm) == "def half(x):\n" + right  # the chat answer's group of 2 wins
    shifted = "```python\ndef half(x):\n    return x >> 1\n```"
    tied = ScriptedViews(right, shifted, ["    return x / 2\n", right], TESTS)
    assert solve(TASK, tied) == "def half(x):\n" + right  # the greedy continuation first


def test_chat_program_keeps_the_prompts_imports_and_survives_a_reply_without_code():
    task = {"prompt": "import math\n\ndef half(x):\n", "entry_point": "half"}
    reply = "```python\ndef half(x):\n    return x / 2\n```"
    assert chat_program(task, ScriptedViews("", reply, [], "")) == (
        "import math\n\ndef half(x):\n    return x / 2\n"
    )
    bare = "def half(x): return x / 2"
    assert chat_program(task, ScriptedViews("", bare, [], "")) == "import math\n\n" + bare
