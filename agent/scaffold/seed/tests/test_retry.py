"""The retry knob and improve's check against today's knobs, with a scripted model.

An agent whose settings no longer have the retry (it rewrote its solve) has nothing here to test."""

import tempfile
from contextlib import contextmanager
from pathlib import Path

from scaffold import settings
from scaffold.improve import improve
from scaffold.solve import solve

PROMPT = 'def add(a, b):\n    """Sum.\n    >>> add(1, 2)\n    3\n    """\n'
TASK = {"task_id": "t", "prompt": PROMPT, "entry_point": "add"}
WRONG = "def add(a, b):\n    return a - b\n"
RIGHT = "def add(a, b):\n    return a + b\n"


class ScriptedModel:
    """Greedy calls answer WRONG; sampled ones answer RIGHT (as a chat reply or a continuation);
    proposals come from `proposals`."""

    def __init__(self, proposals=()):
        self.proposals = list(proposals)
        self.calls = []

    def chat(self, messages, temperature=0.0, n=1, **_):
        self.calls.append((temperature, n))
        if "You tune a coding agent" in messages[0]["content"]:
            return self.proposals[:1] if temperature == 0 else self.proposals[1 : 1 + n]
        return [WRONG if temperature == 0 else RIGHT] * n

    def complete(self, prompt, temperature=0.0, n=1, **_):  # settings.PROTOCOL = "completion"
        self.calls.append((temperature, n))
        body = (WRONG if temperature == 0 else RIGHT).split("\n", 1)[1]
        return [body] * n


HAS_RETRY = hasattr(settings, "RETRY_SAMPLES")


GREEDY = {
    "SAMPLES": 1,
    "TEMPERATURE": 0.0,
    "SELECT_BY_EXAMPLES": False,
    "RETRY_SAMPLES": 0,
    "RETRY_TEMPERATURE": 0.8,
    **({"REPAIR_ROUNDS": 0} if hasattr(settings, "REPAIR_ROUNDS") else {}),
}  # the knobs these tests set, whatever the agent's settings say now


@contextmanager
def knobs_set(**knobs):
    """The knobs set for the block, and put back as they were after it."""
    saved = {k: getattr(settings, k) for k in knobs}
    for k, v in knobs.items():
        setattr(settings, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(settings, k, v)


def test_no_retry_by_default_one_greedy_call():
    if not HAS_RETRY:
        return
    with knobs_set(**GREEDY):
        model = ScriptedModel()
        assert "a - b" in solve(TASK, model)
        assert model.calls == [(0.0, 1)]


def test_retry_only_when_the_examples_fail():
    if not HAS_RETRY:
        return
    with knobs_set(**{**GREEDY, "RETRY_SAMPLES": 3}):
        model = ScriptedModel()
        assert "a + b" in solve(TASK, model)
        assert model.calls == [(0.0, 1), (0.8, 3)]
        model.calls.clear()
        solve({**TASK, "prompt": PROMPT.replace("    3\n", "    -1\n")}, model)
        assert model.calls == [(0.0, 1)]  # greedy already reproduces the example: no retry


def test_improve_keeps_today_s_knobs_unless_a_proposal_does_better():
    if not HAS_RETRY:
        return
    with tempfile.TemporaryDirectory() as folder:
        check_improve_against_today(Path(folder))


def check_improve_against_today(workspace):
    statement = f"Task prompt:\n```python\n{PROMPT}```\nEntry point: add\n"
    settings_file = workspace / "scaffold" / "settings.py"
    settings_file.parent.mkdir()
    source = "RETRY_SAMPLES = 2\nRETRY_TEMPERATURE = 0.8\nTEMPERATURE = 0.0\n"
    settings_file.write_text(source)
    with knobs_set(**{**GREEDY, "RETRY_SAMPLES": 2}):
        note = improve(
            str(workspace), statement, ScriptedModel(["```python\nRETRY_SAMPLES = 0\n```"])
        )
        assert settings_file.read_text() == source  # today's pass the example: nothing to gain
        assert "today's settings pass the examples" in note, note
        settings.RETRY_SAMPLES = 0
        greedy_only = "INSTRUCT_MAX_TOKENS = 768\n"
        settings_file.write_text(greedy_only)
        note = improve(str(workspace), statement, ScriptedModel(["INSTRUCT_MAX_TOKENS = 1024"]))
        assert settings_file.read_text() == greedy_only  # a tie with today's (still wrong): kept
        assert "kept today's" in note, note
        settings_file.write_text(source.replace("= 2", "= 0"))
        note = improve(
            str(workspace), statement, ScriptedModel(["```python\nRETRY_SAMPLES = 2\n```"])
        )
        assert "RETRY_SAMPLES = 2\n" in settings_file.read_text()
        assert "wrote {'RETRY_SAMPLES': 2} (the model's proposal)" in note, note


def test_improve_judges_on_the_failed_tasks_whose_examples_fail_today():
    if not HAS_RETRY:
        return
    with tempfile.TemporaryDirectory() as folder:
        settings_file = Path(folder) / "scaffold" / "settings.py"
        settings_file.parent.mkdir()
        source = "RETRY_SAMPLES = 0\n"
        settings_file.write_text(source)
        passing_today = PROMPT.replace("    3\n", "    -1\n")  # the greedy WRONG reproduces it
        statement = (
            f"Task prompt:\n```python\n{passing_today}```\nEntry point: add\n"
            f"The agent also failed task u.\nTask prompt:\n```python\n{PROMPT}```\n"
            "Entry point: add\n"
        )
        with knobs_set(**GREEDY):
            improve(folder, statement, ScriptedModel(["```python\nRETRY_SAMPLES = 2\n```"]))
        # the diagnosed task's example passes today; the other's does not, and a retry fixes it
        assert settings_file.read_text() == "RETRY_SAMPLES = 2\n"


def test_improve_steps_to_a_neighbour_when_the_model_proposes_nothing():
    if not HAS_RETRY:
        return
    with tempfile.TemporaryDirectory() as folder:
        settings_file = Path(folder) / "scaffold" / "settings.py"
        settings_file.parent.mkdir()
        source = "RETRY_SAMPLES = 0  # extra samples\nSELECT_BY_EXAMPLES = False\n"
        settings_file.write_text(source)
        statement = f"Task prompt:\n```python\n{PROMPT}```\nEntry point: add\n"
        with knobs_set(**GREEDY):
            note = improve(folder, statement, ScriptedModel(["no settings to offer"] * 4))
        assert "(a neighbour of today's)" in note, note
        # of the neighbours (RETRY_SAMPLES 1, 2 or 4, SELECT_BY_EXAMPLES on), only a retry
        # passes the example, so that one is written, its comment kept
        assert settings_file.read_text() in (
            source.replace("= 0", "= 1"),
            source.replace("= 0", "= 2"),
            source.replace("= 0", "= 4"),
        )
        no_example = statement.replace("    >>> add(1, 2)\n    3\n", "")
        assert no_example != statement
        before = settings_file.read_text()
        with knobs_set(**GREEDY):
            improve(folder, no_example, ScriptedModel(["no settings to offer"] * 4))
        assert settings_file.read_text() == before


def test_improve_does_not_trade_a_solved_task_for_a_lucky_draw():
    if not HAS_RETRY or not hasattr(settings, "TEMPERATURE"):
        return
    with tempfile.TemporaryDirectory() as folder:
        settings_file = Path(folder) / "scaffold" / "settings.py"
        settings_file.parent.mkdir()
        source = "RETRY_SAMPLES = 0\nTEMPERATURE = 0.0\n"
        failed = (
            f"The agent failed task t.\nTask prompt:\n```python\n{PROMPT}```\nEntry point: add\n"
        )
        solved_today = PROMPT.replace("    3\n", "    -1\n")  # the greedy WRONG passes it
        solved = (
            "Tasks the agent solves today (a change should keep them solved):\n"
            f"Solved task s.\nTask prompt:\n```python\n{solved_today}```\nEntry point: add\n"
        )
        proposals = ["TEMPERATURE = 0.8", "RETRY_SAMPLES = 2", "RETRY_SAMPLES = 2"]
        with knobs_set(**GREEDY):
            settings_file.write_text(source)
            note = improve(folder, failed, ScriptedModel(proposals))
            # judged on the failure alone, sampling every answer fixes it as well as a retry
            # does, and the model's first proposal wins the tie
            assert "TEMPERATURE = 0.8\n" in settings_file.read_text(), note
            settings_file.write_text(source)
            note = improve(folder, failed + solved, ScriptedModel(proposals))
            # a sampled answer breaks the solved task's example; a retry (only when the
            # examples fail) keeps it
            assert settings_file.read_text() == source.replace(
                "RETRY_SAMPLES = 0", "RETRY_SAMPLES = 2"
            )
            assert "on the examples of 1 failing and 1 solved tasks" in note, note
            # the note says what each proposal scored, the model's first
            assert "; tried {'TEMPERATURE': 0.8} 1.00, {'RETRY_SAMPLES': 2} 2.00" in note, note


class WithProposer(ScriptedModel):
    """A session whose calls go to a proposer model by default, one that answers every task
    right; calls naming the policy reach the scripted policy (greedy wrong, sampled right)."""

    def __init__(self, proposals):
        super().__init__(proposals)
        self.policy = ScriptedModel()

    def chat(self, messages, temperature=0.0, n=1, **kw):
        if "You tune a coding agent" in messages[0]["content"]:
            return super().chat(messages, temperature=temperature, n=n, **kw)
        return [RIGHT] * n

    def models(self):
        return ["proposer", "policy"]

    def using(self, name):
        assert name == "policy"
        return self.policy


def test_improve_checks_proposals_on_the_policy_not_the_proposer():
    if not HAS_RETRY:
        return
    with tempfile.TemporaryDirectory() as folder:
        settings_file = Path(folder) / "scaffold" / "settings.py"
        settings_file.parent.mkdir()
        settings_file.write_text("RETRY_SAMPLES = 0\n")
        statement = f"Task prompt:\n```python\n{PROMPT}```\nEntry point: add\n"
        with knobs_set(**GREEDY):
            note = improve(folder, statement, WithProposer(["RETRY_SAMPLES = 2"] * 4))
        # on the proposer today's settings would pass the example; on the policy they fail it,
        # and the retry the proposer proposed fixes it
        assert settings_file.read_text() == "RETRY_SAMPLES = 2\n", note
