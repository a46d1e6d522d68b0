"""How the agent edits itself: small knob edits, proposed by the model, checked on failed tasks.

A small model cannot rewrite a file reliably, but it can change a line. So `improve` shows the
model the agent's knobs (the assignments in scaffold/settings.py, with their comments) and the
failed task, and asks for a few `NAME = value` lines. Several proposals are drawn, and a few
one-knob neighbours of today's settings are added without the model (a flag flipped, a number
halved, nudged, doubled or quadrupled); each is parsed (known knob, literal of the same type, in
range).
The problem statement carries several failed tasks; those whose visible examples (the `>>>`
lines of a prompt) today's knobs get wrong are the ones a knob can be judged on, and every
proposal is tried on all of them by running `solve` with the new knobs (in parallel child
processes, so the gateway decodes them together). When the statement also lists tasks the agent
solves today (after SOLVED_MARK), each proposal is tried on those too, so a change that fixes a
failure by luck (a sampled answer) but breaks solved tasks loses what it breaks. The proposal
that passes most examples in all is written into settings.py, one line per knob, comments kept.
When no proposal parses, when today's knobs already pass every example shown, or when no
proposal does better than them, nothing changes (the loop then records an empty edit): a child
costs a whole dev evaluation, and a change the examples cannot tell apart from today's (ten
identical greedy samples, say) is not worth one.
"""

import ast
import io
import os
import random
import re
import select
import time
import tokenize

from scaffold import settings
from scaffold import solve as solve_module
from scaffold.text import code_blocks, doc_examples

SETTINGS = "scaffold/settings.py"
PROPOSALS = 4  # replies drawn from the model per self-edit (one greedy, the rest sampled)
PROPOSAL_TEMPERATURE = 0.8
PROPOSAL_TOKENS = 160
MAX_KNOBS_PER_PROPOSAL = 3
MIN_INT_CEILING = 16  # an int knob may go from 1 to max(16, twice its value)
FLOAT_RANGE = (0.0, 1.5)
MAX_STR_KNOB = 32
MAX_NOTE_CHARS = 120  # of a knob's comment, as the proposer is shown it
NEIGHBOURS = 4  # one-knob changes drawn without the model, tried beside its proposals
CHECK_TASKS = 3  # failed tasks (of those whose examples fail today) each proposal is tried on
GUARD_TASKS = 8  # solved tasks (those the host lists after SOLVED_MARK) a proposal must keep
SOLVED_MARK = "Tasks the agent solves today"
PARALLEL_CHECKS = 4  # solves run at once while checking (each its own child process)
CHECK_TIMEOUT_S = 240.0  # one check's solve; past it the check counts as no example passed


def improve(workspace, problem_statement, llm):
    """Edit the settings in `workspace` for the failures the problem statement shows; return one
    line saying what was tried and why it was kept or not (the host stores it with the child)."""
    path = os.path.join(workspace, SETTINGS)
    with open(path) as f:
        source = f.read()
    knobs = read_knobs(source)
    failed_part, _, solved_part = problem_statement.partition(SOLVED_MARK)
    tasks = [t for t in tasks_of(failed_part) if doc_examples(t["prompt"])]
    solved = [t for t in tasks_of(solved_part) if doc_examples(t["prompt"])][:GUARD_TASKS]
    replies = ask_for_proposals(knobs, failed_part, llm)
    proposed = [p for p in (parse_proposal(r, knobs) for r in replies) if p]
    rng = random.Random(problem_statement)  # the same failure draws the same neighbours
    proposals = unique(proposed + neighbours(knobs, rng, NEIGHBOURS))
    tried = f"{len(proposed)} of {len(replies)} model replies parsed, {len(proposals)} proposals"
    if not proposals:
        return f"{tried}: nothing to try"
    best = proposals[0]  # the greedy reply's, unless a check says otherwise
    judged = "unchecked (no task with a visible example)"
    scored = ""  # each proposal's total, for whoever reads the note (a later improve, a person)
    if tasks:
        policy = policy_of(llm)
        today = check_all([(task, {}) for task in tasks + solved], policy)
        failing = [(t, s) for t, s in zip(tasks, today[: len(tasks)], strict=True) if s < 1.0]
        failing = failing[:CHECK_TASKS]
        if not failing:
            return f"{tried}: today's settings pass the examples of all {len(tasks)} tasks shown"
        # solved tasks whose examples pass today: a proposal that breaks one loses its points
        kept = [(t, s) for t, s in zip(solved, today[len(tasks) :], strict=True) if s >= 1.0]
        checked = failing + kept
        scores = check_all([(t, p) for p in proposals for t, _ in checked], policy)
        totals = [sum(scores[i : i + len(checked)]) for i in range(0, len(scores), len(checked))]
        base = sum(s for _, s in checked)
        solved_too = f" and {len(kept)} solved" if kept else ""
        judged = f"on the examples of {len(failing)} failing{solved_too} tasks: today {base:.2f}"
        scored = "; tried " + ", ".join(
            f"{p} {t:.2f}" for p, t in zip(proposals, totals, strict=True)
        )
        if max(totals) <= base:
            return f"{tried}; {judged}, best proposal {max(totals):.2f}: kept today's{scored}"
        best = proposals[totals.index(max(totals))]  # ties keep the earlier proposal
        judged += f", {best} {max(totals):.2f}"
    elif not proposed:
        return f"{tried}: no example to check a neighbour on"
    with open(path, "w") as f:
        f.write(apply_knobs(source, best))
    origin = "the model's proposal" if best in proposed else "a neighbour of today's"
    return f"{tried}; {judged}: wrote {best} ({origin}){scored}"


def policy_of(llm):
    """The model proposals are checked on: the agent's own policy, which the child will run
    with, even where a proposer model writes the proposals (the gateway then lists the policy
    after the proposer, and serves calls that name it)."""
    try:
        names = llm.models()
    except Exception:  # a client or a model that cannot list: the session's own
        return llm
    return llm.using(names[-1]) if len(names) > 1 else llm


def comments(source):
    """{line number: comment text} of every comment (tokenized: a `#` in a string is none)."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {t.start[0]: t.string for t in tokens if t.type == tokenize.COMMENT}


def knob_nodes(source):
    """The one-line top-level `NAME = literal` assignments: the knobs an edit may change."""
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if isinstance(target, ast.Name) and target.id.isupper() and node.lineno == node.end_lineno:
            try:
                yield target.id, ast.literal_eval(node.value), node.lineno
            except ValueError:
                continue


def proposable(value):
    """Knobs a one-line proposal can change: flags, numbers and short words (not prompts or
    lists of stop strings, which a small model would only garble)."""
    if isinstance(value, bool | int | float):
        return True
    return isinstance(value, str) and len(value) <= MAX_STR_KNOB and "\n" not in value


def read_knobs(source):
    """{name: (value, what its comments say)} for every proposable knob of the settings file."""
    notes = comments(source)
    knobs = {}
    for name, value, line in knob_nodes(source):
        if not proposable(value):
            continue
        said = [notes[line].lstrip("#").strip()] if line in notes else []
        above = line - 1
        while above in notes and not source.splitlines()[above - 1].split("#")[0].strip():
            said.insert(0, notes[above].lstrip("#").strip())
            above -= 1
        knobs[name] = (value, " ".join(said))
    return knobs


def ask_for_proposals(knobs, problem_statement, llm):
    described = "\n".join(
        f"{name} = {value!r}  # {first_sentence(why)}" for name, (value, why) in knobs.items()
    )
    messages = [
        {
            "role": "system",
            "content": "You tune a coding agent by changing its settings. Reply with one "
            "```python block holding only lines of the form NAME = value, at most "
            f"{MAX_KNOBS_PER_PROPOSAL} lines, using only the setting names shown.",
        },
        {
            "role": "user",
            "content": f"The agent's settings (scaffold/settings.py):\n```python\n{described}\n```"
            f"\n\n{problem_statement}\n\nWhich settings should change so that the agent "
            "solves tasks like this one?",
        },
    ]
    replies = llm.chat(messages, max_tokens=PROPOSAL_TOKENS, temperature=0.0)
    if PROPOSALS > 1:
        try:
            replies += llm.chat(
                messages,
                max_tokens=PROPOSAL_TOKENS,
                temperature=PROPOSAL_TEMPERATURE,
                n=PROPOSALS - 1,
            )
        except Exception:  # a spent budget or an endpoint that cannot sample: greedy's only
            pass
    return replies


# `NAME = literal` wherever it stands: on its own line, or in prose ("set SAMPLES = 2, ...")
def first_sentence(text):
    """A knob's comment cut to its first sentence: a small model echoes long ones back whole
    and has no tokens left for its proposal."""
    head = re.split(r"(?<=\.)\s", text, maxsplit=1)[0]
    return head if len(head) <= MAX_NOTE_CHARS else head[: MAX_NOTE_CHARS - 3] + "..."


_ASSIGN = re.compile(
    r"\b([A-Z][A-Z0-9_]*)\s*=\s*('[^'\n]*'|\"[^\"\n]*\"|True|False|-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)"
)


def parse_proposal(reply, knobs):
    """{name: value} from a reply's `NAME = value` assignments (its code blocks, else the whole
    reply): known knobs, literals of the knob's type, in range, different from now. None when
    nothing usable is left."""
    text = "\n".join(code_blocks(reply)) or reply
    changes = {}
    for match in _ASSIGN.finditer(text):
        if match.group(1) not in knobs:
            continue
        name, raw = match.group(1), match.group(2)
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            continue
        value = coerce(value, knobs[name][0])
        if value is not None and value != knobs[name][0]:
            changes[name] = value
        if len(changes) == MAX_KNOBS_PER_PROPOSAL:
            break
    return changes or None


def coerce(value, current):
    """`value` as the type of the knob's current value, or None when it does not fit."""
    if isinstance(current, bool):
        return value if isinstance(value, bool) else None
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            return None
        return int(value) if 1 <= value <= max(MIN_INT_CEILING, 2 * current) else None
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value) if FLOAT_RANGE[0] <= value <= FLOAT_RANGE[1] else None
    if isinstance(current, str):
        return value if isinstance(value, str) and proposable(value) else None
    return None


def neighbours(knobs, rng, count):
    """Up to `count` one-knob changes of today's settings, each on another knob: a flag
    flipped, a number halved, nudged, doubled or quadrupled (a small count's big step, within
    `coerce`'s range). A search step that needs no model (a small one proposes little that
    parses), judged on the examples like the model's proposals."""
    steps = {name: values for name, (value, _) in knobs.items() if (values := near(value))}
    chosen = rng.sample(sorted(steps), min(count, len(steps)))
    return [{name: rng.choice(steps[name])} for name in chosen]


def near(value):
    """The values one step from `value` that `coerce` accepts (words have none: a made-up word
    is no valid setting)."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        steps = {max(1, value // 2), max(2, 2 * value), max(4, 4 * value)}
        steps |= {value + 1} if value < 8 else set()
    elif isinstance(value, float):
        steps = {round(value + d, 2) for d in (-0.4, -0.2, 0.2, 0.4)}
    else:
        return []
    return sorted(v for v in steps if v != value and coerce(v, value) is not None)


def unique(proposals):
    seen, out = set(), []
    for p in proposals:
        key = tuple(sorted((k, repr(v)) for k, v in p.items()))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


_TASK = re.compile(r"Task prompt:\s*```python\n(.*?)```\s*\nEntry point:\s*(\w+)", re.DOTALL)


def tasks_of(problem_statement):
    """The failed tasks as `solve` takes them, from the problem statement's `Task prompt` blocks,
    each followed by its `Entry point:` line (the diagnosed task first)."""
    return [
        {"task_id": f"improve-check-{i}", "prompt": prompt, "entry_point": entry}
        for i, (prompt, entry) in enumerate(_TASK.findall(problem_statement))
    ]


def check_all(checks, llm):
    """`check_on_examples` of each (task, changes), at most PARALLEL_CHECKS at once, each in a
    child process (the knobs are module globals: a child may set them without racing the
    others). A check that crashes or outlives CHECK_TIMEOUT_S scores 0."""
    scores = [0.0] * len(checks)
    running = {}  # read end -> (index, pid, deadline)
    pending = list(enumerate(checks))
    while pending or running:
        while pending and len(running) < PARALLEL_CHECKS:
            index, (task, changes) = pending.pop(0)
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: one check, its score on the pipe, never return
                os.close(read_end)
                try:
                    os.write(write_end, repr(check_on_examples(task, changes, llm)).encode())
                finally:
                    os._exit(0)
            os.close(write_end)
            running[read_end] = (index, pid, time.monotonic() + CHECK_TIMEOUT_S)
        wait = max(0.0, min(deadline for _, _, deadline in running.values()) - time.monotonic())
        ready, _, _ = select.select(list(running), [], [], wait)
        now = time.monotonic()
        for read_end in list(running):
            index, pid, deadline = running[read_end]
            if read_end not in ready and now < deadline:
                continue
            answer = os.read(read_end, 64) if read_end in ready else b""
            os.close(read_end)
            del running[read_end]
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            try:
                scores[index] = min(1.0, max(0.0, float(answer.decode())))
            except ValueError:
                pass
    return scores


def check_on_examples(task, changes, llm):
    """The share of the task's visible examples that `solve`, run with `changes` applied to the
    knobs, reproduces (0 when the task shows none, or solve fails)."""
    examples = doc_examples(task["prompt"])
    if not examples:
        return 0.0
    saved = {name: getattr(settings, name) for name in changes}
    try:
        for name, value in changes.items():
            setattr(settings, name, value)
        program = solve_module.solve(task, llm)
        return solve_module.examples_passed(program, task["prompt"]) / len(examples)
    except Exception:
        return 0.0
    finally:
        for name, value in saved.items():
            setattr(settings, name, value)


def apply_knobs(source, changes):
    """The settings file with each changed knob's line rewritten (its trailing comment kept)."""
    lines = source.splitlines(keepends=True)
    notes = comments(source)
    for name, _value, line in knob_nodes(source):
        if name in changes:
            comment = f"  {notes[line]}" if line in notes else ""
            lines[line - 1] = f"{name} = {changes[name]!r}{comment}\n"
    return "".join(lines)
