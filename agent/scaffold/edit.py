"""Self-modification, DGM style: failures -> diagnosis -> problem statement -> the parent's own
`improve` edits a copy of its repository in the sandbox -> the diff is validated.

Every way this can go wrong (no failure to learn from, an empty or unparseable reply, a diff that
touches protected paths, a package that no longer imports, its own tests failing, a timeout, an
exhausted budget) ends as a `Proposal` with `failure` set, never as an exception for the caller.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from agent.gateway import Budget, ExternalEndpoint, Gateway
from agent.scaffold.failures import TaskFailure
from agent.scaffold.jobs import IMPROVE_NOTE_CHARS, PROTECTED_PATHS, improve_job, selftest_job
from agent.scaffold.repo import Files, apply_changes
from agent.scaffold.syntax import syntax_problem
from archive.paths import MAX_SCAFFOLD_BYTES, path_problem, size_problem, tree_problem
from evaluators.task import Task
from sandbox.job import JobRunner, Limits, Status

# Paths whose edits are allowed but flagged in the node's metadata: the agent's own tests, and
# anything that looks like logging (what a reward hacker would touch first).
FLAGGED_PREFIXES = ("tests/",)
FLAGGED_WORDS = ("log",)


class EditConfig(BaseModel):
    """Bounds of one self-edit (the run's `[edit]` section holds them and says who proposes).

    - `improve_wall_s`, `improve_tokens`, `improve_calls`: bounds of the agent's `improve` run
      in the sandbox (the seed's improve makes a call per solve of each candidate it checks).
    - `failures_shown`: failed train tasks the problem statement carries: the diagnosed one and
      others, so `improve` can check a change on more than one task's examples.
    - `solved_shown`: train tasks the parent solves, listed after the failures under
      `SOLVED_HEADING`, so `improve` can also check that a change keeps them solved (a change
      judged on failures alone can trade solved tasks for lucky draws on failed ones).
    - `diagnosis_tokens`: the diagnosis reply's length; `selftest_wall_s`: the child's own tests.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    improve_wall_s: float = Field(600.0, gt=0)
    improve_tokens: int = Field(4096, ge=1)
    improve_calls: int = Field(64, ge=1)
    failures_shown: int = Field(4, ge=1)
    solved_shown: int = Field(0, ge=0)
    diagnosis_tokens: int = Field(256, ge=1)
    selftest_wall_s: float = Field(120.0, gt=0)


DEFAULT_EDIT = EditConfig()


@dataclass
class Proposal:
    """A candidate child scaffold, or why there is none."""

    changes: dict[str, str | None] = field(default_factory=dict)
    files: Files = field(default_factory=dict)
    diagnosis: str = ""
    problem_statement: str = ""
    flags: list[str] = field(default_factory=list)
    failure: str | None = None
    note: str = ""  # what the agent's improve said it tried (bounded, printable)
    tokens: int = 0
    sandbox_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None


def pick_failures(
    failed: Sequence[TaskFailure], rng: random.Random, count: int
) -> list[TaskFailure]:
    """Up to `count` failures in a random order; the first is the one diagnosed."""
    return rng.sample(failed, min(count, len(failed)))


SETTINGS_FILE = "scaffold/settings.py"  # the seed's knobs; shown when the scaffold has it
SHOWN_PROGRAM_CHARS = 3000


def diagnosis_messages(files: Mapping[str, str], failure: TaskFailure) -> list[dict[str, str]]:
    """The failure as the model sees it: the agent's README and knobs, the task (its visible
    examples included), the agent's answer and how the tests judged it."""
    readme = files.get("README.md", "")
    knobs = files.get(SETTINGS_FILE)
    shown_knobs = f"\n\nIts settings ({SETTINGS_FILE}):\n```python\n{knobs}```" if knobs else ""
    return [
        {
            "role": "system",
            "content": "You review a coding agent's failure and say what change to the agent "
            "would fix it. Be short: at most four sentences.",
        },
        {
            "role": "user",
            "content": f"The agent:\n{readme}{shown_knobs}\n\n"
            f"Task:\n```python\n{failure.task.prompt}```\n\n"
            f"The agent's answer:\n```python\n"
            f"{failure.program[:SHOWN_PROGRAM_CHARS] or '(none)'}```\n\n"
            f"Result: {failure.result}\n\n"
            "Why did it fail, and what change to the agent's files would fix it?",
        },
    ]


def task_block(task: Task) -> str:
    return f"Task prompt:\n```python\n{task.prompt}```\nEntry point: {task.entry_point}\n"


SOLVED_HEADING = "Tasks the agent solves today (a change should keep them solved):"


def problem_statement(
    failures: Sequence[TaskFailure], diagnosis: str, solved: Sequence[Task] = ()
) -> str:
    """What `improve` is given: the diagnosed failed task whole (prompt, entry point), the
    agent's answer, the result and the diagnosis, then the other failed tasks (prompt and entry
    point), so the agent can try a change on several tasks' examples, not one; last, under
    `SOLVED_HEADING`, any solved tasks shown (`[edit] solved_shown`)."""
    failure, others = failures[0], failures[1:]
    also = "".join(
        f"The agent also failed task {other.task.task_id}.\n{task_block(other.task)}"
        for other in others
    )
    kept = "".join(f"Solved task {t.task_id}.\n{task_block(t)}" for t in solved)
    return (
        f"The agent failed task {failure.task.task_id}.\n"
        f"{task_block(failure.task)}"
        f"The agent's answer:\n```python\n"
        f"{failure.program[:SHOWN_PROGRAM_CHARS] or '(none)'}```\n"
        f"Result: {failure.result}\n"
        f"Diagnosis: {diagnosis.strip()}\n"
        f"{also}"
        "Change the agent so that it solves tasks like these. Keep `solve(task, llm)` and "
        "`improve(workspace, problem_statement, llm)` working, and keep the tests passing."
        + (f"\n{SOLVED_HEADING}\n{kept}" if kept else "")
    )


def flags_for(changes: Mapping[str, str | None]) -> list[str]:
    flags = []
    for rel in sorted(changes):
        if rel.startswith(FLAGGED_PREFIXES):
            flags.append(f"touches tests: {rel}")
        elif any(w in rel.lower() for w in FLAGGED_WORDS):
            flags.append(f"touches logging: {rel}")
    return flags


def check_changes(
    changes: Mapping[str, str | None],
    protected: Sequence[str],
    files: Mapping[str, str] | None = None,
) -> str | None:
    """Why a set of changes cannot be a child (host-side checks; nothing is executed), or None.

    Cheap checks come first and bound the costly one: every path passes the scaffold path
    policy, every text is UTF-8 within the size caps, and only then are the Python files parsed
    (in a child process under limits). `files`, the parent's scaffold, lets the result be
    checked as a whole (a file where a directory is, too many files)."""
    if not changes:
        return "empty diff: improve changed nothing"
    if not isinstance(changes, dict) or not all(isinstance(k, str) for k in changes):
        return "malformed changes from improve"
    total = 0
    sources: dict[str, str] = {}
    for rel, text in changes.items():
        why = path_problem(rel, protected)
        if why:
            return why
        if text is None:
            continue
        if not isinstance(text, str):
            return f"non-text content for {rel}"
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            return f"path {rel!a}: not UTF-8 text"
        total += size
        why = size_problem(rel, size)
        if why:
            return why
        if total > MAX_SCAFFOLD_BYTES:
            return f"the changed files hold more than {MAX_SCAFFOLD_BYTES} bytes together"
        if rel.endswith(".py"):
            sources[rel] = text
    why = tree_problem(apply_changes(files or {}, changes))
    return why or syntax_problem(sources)


def propose(
    files: Files,
    failed: Sequence[TaskFailure],
    agent_pool: JobRunner,
    gateway: Gateway,
    config: EditConfig = DEFAULT_EDIT,
    rng: random.Random | None = None,
    label: str = "edit",
    *,
    proposer: ExternalEndpoint | None = None,
    solved: Sequence[Task] = (),
) -> Proposal:
    """Diagnose one failure and let the scaffold's own `improve` fix it; validated, not stored.
    `proposer`: None = the node's own policy through the gateway; an `ExternalEndpoint` = any
    OpenAI-compatible server (vLLM serve, llama.cpp, a hosted API) for diagnosis and improve.
    `solved`: train tasks the parent solves, shown to `improve` after the failures."""
    rng = rng or random.Random(0)
    proposal = Proposal()
    failures = pick_failures(failed, rng, config.failures_shown)
    if not failures:
        proposal.failure = "no failed task to learn from"
        return proposal
    failure = failures[0]
    try:  # an external proposer without its API key is refused here, with the reason
        token = gateway.open_session(
            f"{label}:diagnose",
            Budget(tokens=config.diagnosis_tokens, seconds=config.improve_wall_s, calls=1),
            external=proposer,
        )
    except ValueError as exc:
        proposal.failure = f"proposer: {exc}"
        return proposal
    try:
        proposal.diagnosis, proposal.failure = diagnose(gateway, token, files, failure, config)
    finally:
        proposal.tokens += gateway.close_session(token).tokens_used
    if proposal.failure:
        return proposal
    if not proposal.diagnosis:
        proposal.failure = "diagnosis: the model's reply was empty"
        return proposal
    proposal.problem_statement = problem_statement(failures, proposal.diagnosis, solved)

    token = gateway.open_session(
        f"{label}:improve",
        Budget(
            tokens=config.improve_tokens, seconds=config.improve_wall_s, calls=config.improve_calls
        ),
        external=proposer,
    )
    limits = Limits(
        wall_s=config.improve_wall_s, cpu_s=int(config.improve_wall_s) + 1, processes=32
    )
    try:
        (verdict,) = agent_pool.run([improve_job(files, proposal.problem_statement, token, limits)])
    finally:
        record = gateway.close_session(token)
        proposal.tokens += record.tokens_used
    proposal.sandbox_s += verdict.duration_s
    if verdict.status is not Status.PASSED or not verdict.kept:
        budget = " (LLM budget exhausted)" if record.exhausted else ""
        proposal.failure = f"improve {verdict.status.value}{budget}: {verdict.detail}"[:2000]
        return proposal
    try:
        changes, proposal.note = improve_report(verdict.kept[0])
    except ValueError as exc:
        proposal.failure = str(exc)
        return proposal
    why = check_changes(changes, PROTECTED_PATHS, files)
    if why:
        proposal.failure = why
        return proposal
    proposal.changes = dict(changes)
    proposal.files = apply_changes(files, changes)
    proposal.flags = flags_for(changes)
    return validate(proposal, agent_pool, config)


def diagnose(
    gateway: Gateway, token: str, files: Files, failure: TaskFailure, config: EditConfig
) -> tuple[str, str | None]:
    """(the diagnosis, why there is none): one greedy chat under the diagnosis session, asked
    in this process (the gateway's own checks and record, no socket)."""
    body = {
        "messages": diagnosis_messages(files, failure),
        "max_tokens": config.diagnosis_tokens,
        "temperature": 0.0,
    }
    status, answer = gateway.ask(token, "/v1/chat/completions", body)
    if status != 200:
        message = (answer.get("error") or {}).get("message", answer)
        return "", f"diagnosis failed: LLM gateway answered {status}: {message}"
    choices = answer.get("choices") or [{}]
    return (choices[0].get("message", {}).get("content") or "").strip(), None


def improve_report(kept: object) -> tuple[object, str]:
    """The improve job's answer, `{"changes": ..., "note": str}`, as the host may use it: the
    changes still to be checked (`check_changes`), the note cut and made printable. It came
    out of the agent's process, so nothing about its shape is trusted."""
    if not isinstance(kept, dict) or set(kept) != {"changes", "note"}:
        raise ValueError("malformed report from improve")
    note = kept["note"] if isinstance(kept["note"], str) else ""
    note = "".join(c if c.isprintable() or c == "\n" else "?" for c in note[:IMPROVE_NOTE_CHARS])
    return kept["changes"], note


def validate(proposal: Proposal, agent_pool: JobRunner, config: EditConfig) -> Proposal:
    """The child's package must import and its own tests pass, run in the sandbox."""
    limits = Limits(wall_s=config.selftest_wall_s, cpu_s=int(config.selftest_wall_s) + 1)
    (verdict,) = agent_pool.run([selftest_job(proposal.files, limits)])
    proposal.sandbox_s += verdict.duration_s
    if verdict.status is not Status.PASSED or not verdict.kept:
        proposal.failure = f"self-test {verdict.status.value}: {verdict.detail}"[:2000]
        return proposal
    report = verdict.kept[0]
    failures = report.get("failures") if isinstance(report, dict) else ["malformed report"]
    if failures:
        proposal.failure = f"self-test failed: {str(failures[0])[:1500]}"
    return proposal
