from scaffold.improve import apply_knobs, near, parse_proposal, read_knobs, tasks_of

SETTINGS = (
    '"""Knobs."""\n'
    "SAMPLES = 1  # completions drawn per task\n"
    "# 0 = greedy\n"
    "TEMPERATURE = 0.0\n"
    'STOPS = ["\\n#", "\\ndef"]  # ends a completion\n'
    "CHECK = False\n"
)


def test_read_knobs_with_their_comments():
    knobs = read_knobs(SETTINGS)
    assert knobs["SAMPLES"] == (1, "completions drawn per task")
    assert knobs["TEMPERATURE"] == (0.0, "0 = greedy")
    assert "STOPS" not in knobs  # lists of stops are not for one-line proposals
    assert knobs["CHECK"] == (False, "")  # the '#' in STOPS' strings was no comment of CHECK's


def test_parse_proposal_keeps_known_knobs_of_the_right_type():
    knobs = read_knobs(SETTINGS)
    reply = "Try:\n```python\nSAMPLES = 4\nTEMPERATURE = 0.7  # more\nNEW = 1\nCHECK = 1\n```"
    assert parse_proposal(reply, knobs) == {"SAMPLES": 4, "TEMPERATURE": 0.7}
    assert parse_proposal("SAMPLES = 1000", knobs) is None  # out of range
    assert parse_proposal("SAMPLES = 1", knobs) is None  # no change
    assert parse_proposal("nothing to say", knobs) is None


def test_apply_knobs_rewrites_only_the_changed_lines():
    out = apply_knobs(SETTINGS, {"SAMPLES": 4, "CHECK": True})
    assert "SAMPLES = 4  # completions drawn per task\n" in out
    assert "CHECK = True\n" in out
    assert 'STOPS = ["\\n#", "\\ndef"]  # ends a completion\n' in out
    assert read_knobs(out)["TEMPERATURE"] == (0.0, "0 = greedy")


def test_tasks_of_reads_every_failed_task_from_the_problem_statement():
    statement = (
        "The agent failed task t.\nTask prompt:\n```python\ndef f(x):\n    pass\n```\n"
        "Entry point: f\nDiagnosis: wrong\n"
        "The agent also failed task u.\nTask prompt:\n```python\ndef g():\n    pass\n```\n"
        "Entry point: g\n"
    )
    assert tasks_of(statement) == [
        {"task_id": "improve-check-0", "prompt": "def f(x):\n    pass\n", "entry_point": "f"},
        {"task_id": "improve-check-1", "prompt": "def g():\n    pass\n", "entry_point": "g"},
    ]
    assert tasks_of("no task here") == []


def test_a_small_count_can_step_far_a_large_one_stays_in_range():
    assert near(0) == [1, 2, 4]  # a knob that is off can go to a few at once
    assert near(1) == [2, 4]
    assert near(8) == [4, 16]  # 32 is past the range coerce allows (at most twice, or 16)
    assert near(768) == [384, 1536]
    assert near(True) == [False]
    assert near("instruct") == []
