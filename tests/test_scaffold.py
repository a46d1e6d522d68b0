"""The self-modifying scaffold end to end, against real Docker and a real git archive.

The policy is the in-process tiny model (its answers are garbage, which is fine: these tests check
the plumbing, not quality). The proposer is a scripted OpenAI-compatible endpoint with fixed
replies, so propose -> validate -> commit -> evaluate is deterministic.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from agent.gateway import Budget, ExternalEndpoint, Gateway, GatewayConfig
from agent.policy.backend import Generation
from agent.policy.tiny import TinyModelConfig, tiny_model
from agent.policy.transformers_backend import TransformersBackend
from agent.scaffold import failures, solving
from agent.scaffold.edit import (
    DEFAULT_EDIT,
    EditConfig,
    check_changes,
    improve_report,
    propose,
)
from agent.scaffold.jobs import IMPROVE_NOTE_CHARS, improve_job, selftest_job
from agent.scaffold.repo import apply_changes, read_files, seed_files
from agent.scaffold.solving import Scoring, SolveConfig, solve
from archive import Archive
from evaluators.datasets import load_humaneval
from sandbox import Limits, SandboxConfig, SandboxPool, Status

pytestmark = pytest.mark.docker

IMPROVED_SCAFFOLD = Path(__file__).resolve().parents[1] / "benchmarks" / "scaffolds" / "selftests"

# What the scripted proposer answers `improve`: knob lines (the seed's improve edits knobs).
NEW_KNOBS = "SAMPLES = 2\nTEMPERATURE = 0.7\n"


class ScriptedEndpoint:
    """A fake OpenAI-compatible server (the proposer): a diagnosis for review prompts, a fixed
    file otherwise; a completion (which a proposer should never be asked) gets junk."""

    def __init__(self, diagnosis: str, new_file: str) -> None:
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                if "prompt" in body:
                    choice = {"text": "  0\n"}
                else:
                    system = body["messages"][0]["content"]
                    text = diagnosis if "review" in system else f"Here:\n```python\n{new_file}```\n"
                    choice = {"message": {"role": "assistant", "content": text}}
                reply = {
                    "id": "x",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [
                        {"index": i, **choice, "finish_reason": "stop"}
                        for i in range(body.get("n", 1))
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = ExternalEndpoint(
            f"http://127.0.0.1:{self.server.server_address[1]}/v1", "scripted"
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SamplingSolves(TransformersBackend):
    """The tiny model, except that while `solutions` is set a sampled row of a prompt in it gets
    that prompt's continuation: a policy on which sampling helps, so that a proposal to sample
    can win `improve`'s checks, which run on the policy. `asked` records each row's prompt and
    temperature meanwhile."""

    solutions: dict[str, str] = {}
    asked: list[tuple[str, float]] = []

    def generate(self, prompts, config, perturbation=None, member_of_row=None, on_done=None):
        out = super().generate(prompts, config, perturbation, member_of_row, on_done)
        if not self.solutions:
            return out
        self.asked += [(p, config.temperature) for p in prompts]
        if config.temperature == 0:
            return out
        return [
            Generation(self.solutions[p], 8, "stop") if p in self.solutions else g
            for p, g in zip(prompts, out, strict=True)
        ]


@pytest.fixture(scope="module")
def backend():
    torch.set_num_threads(1)
    model, tokenizer = tiny_model(TinyModelConfig(seed=0))
    return SamplingSolves(model, tokenizer)


@pytest.fixture(scope="module")
def gateway(backend):
    template = lambda messages: "\n".join(m["content"] for m in messages) + "\n"  # noqa: E731
    with Gateway(backend, GatewayConfig(), chat_template=template) as g:
        yield g


@pytest.fixture(scope="module")
def agent_pool(sandbox_image, gateway):
    config = SandboxConfig(workers=2, gateway_dir=str(Path(gateway.socket_path).parent))
    with SandboxPool(config, image=sandbox_image) as pool:
        yield pool


@pytest.fixture(scope="module")
def scoring_pool(sandbox_image):
    with SandboxPool(SandboxConfig(workers=1), image=sandbox_image) as pool:
        yield pool


@pytest.fixture(scope="module")
def tasks():
    return load_humaneval()[:3]


FAST = SolveConfig(tasks_per_job=2, threads=2, wall_s=120, tokens_per_task=512)


def short(files: dict[str, str]) -> dict[str, str]:
    """The seed with short completions: the tiny model's garbage needs no 384 tokens. In
    completion mode: garbage holds no code for the instruct protocol's sanitizer to keep, and
    these tests follow a program from the prompt (test_seed_protocol covers instruct)."""
    text = files["scaffold/settings.py"].replace("MAX_TOKENS = 384", "MAX_TOKENS = 16")
    assert text != files["scaffold/settings.py"]
    text = text.replace('PROTOCOL = "instruct"', 'PROTOCOL = "completion"')
    return {**files, "scaffold/settings.py": text}


def test_seed_scaffold_solves_in_the_sandbox_through_the_gateway(
    agent_pool, scoring_pool, gateway, tasks
):
    result = solve(
        short(seed_files()), tasks, agent_pool, gateway, FAST, scoring=Scoring(scoring_pool)
    )
    assert [a.task.task_id for a in result.attempts] == [t.task_id for t in tasks]
    for attempt in result.attempts:
        assert attempt.error is None, attempt.error
        assert attempt.program.startswith(attempt.task.prompt)
    # every call went through the gateway under this run's sessions, with the task's prompt
    calls = [c for s in result.sessions for c in s.calls]
    assert len(calls) == len(tasks)
    assert result.tokens > 0
    assert all(result.transcript_for(t) for t in tasks)
    assert all(a.verdict is not None for a in result.attempts)
    assert not any(a.verdict.status is Status.INFRA_ERROR for a in result.attempts)


class EventMeter:
    """A meter that remembers the order of its steps (to see scoring overlap generation)."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.lock = threading.Lock()

    def begin(self, what: str, total: int) -> None:
        pass

    def step(self, what: str) -> None:
        with self.lock:
            self.events.append(what)


def test_scoring_overlaps_generation_and_equals_judging_after(
    agent_pool, scoring_pool, gateway, tasks
):
    # A scaffold that answers the first task at once with its reference, the second with an
    # empty program, and the last one 6 s late with a wrong program: jobs of one task each.
    answers = {t.task_id: t.program(t.reference) for t in tasks[:1]}
    answers[tasks[1].task_id] = ""
    answers[tasks[2].task_id] = tasks[2].prompt + "    return None\n"
    slow = tasks[2].task_id
    files = {
        **seed_files(),
        "scaffold/solve.py": (
            "import time\n"
            f"ANSWERS = {answers!r}\n"
            "def solve(task, llm):\n"
            f"    if task['task_id'] == {slow!r}:\n"
            "        time.sleep(6)\n"
            "    return ANSWERS[task['task_id']]\n"
        ),
    }
    one_per_job = SolveConfig(tasks_per_job=1, threads=1, wall_s=60)
    meter = EventMeter()
    streamed = solve(
        files,
        tasks,
        agent_pool,
        gateway,
        one_per_job,
        meter=meter,
        scoring=Scoring(scoring_pool),
    )
    # judging after: one job holds every task, so scoring starts once all of them are answered
    all_in_one = SolveConfig(tasks_per_job=len(tasks), threads=1, wall_s=60)
    after = solve(files, tasks, agent_pool, gateway, all_in_one, scoring=Scoring(scoring_pool))
    statuses = [a.verdict.status for a in streamed.attempts]
    assert statuses == [Status.PASSED, Status.ERROR, Status.FAILED]
    assert statuses == [a.verdict.status for a in after.attempts]
    assert [a.task.task_id for a in streamed.attempts] == [t.task_id for t in tasks]
    # the first answers were scored while the slow job was still generating
    assert meter.events.count("scoring") == len(tasks)
    assert meter.events.index("scoring") < len(meter.events) - 1 - meter.events[::-1].index(
        "agent jobs"
    ), meter.events


def test_agent_job_never_sees_the_tests(tasks):
    from agent.scaffold.jobs import solve_job, task_view

    job = solve_job(seed_files(), [task_view(t) for t in tasks], "tok", Limits())
    for t in tasks:
        assert t.tests not in job.program and t.tests not in "".join(job.checks)
        assert "def check(" not in "".join(job.checks)


def test_an_agent_call_may_wait_as_long_as_its_job(agent_pool, gateway, tasks):
    """The client's per-call timeout is the job's wall clock: in a busy gateway a call waits behind
    others, and a shorter bound would drop calls whose answers the gateway still computes."""
    files = {
        **seed_files(),
        "scaffold/solve.py": "def solve(task, llm):\n    return repr(llm.timeout_s)\n",
    }
    result = solve(files, tasks[:1], agent_pool, gateway, FAST.model_copy(update={"wall_s": 321.0}))
    assert [(a.program, a.error) for a in result.attempts] == [("321.0", None)]


def test_each_task_in_flight_may_start_threads_of_its_own(agent_pool, gateway, tasks):
    """Two tasks in flight, each holding 12 threads alive at once (a scaffold's parallel calls and
    test runs). Both the process allowance (once a fixed 24 per job) and the address space (glibc's
    per-thread malloc arenas filled 1 GiB at ~20 threads) once stopped this."""
    solve_source = (
        "import threading\n"
        "ALL = threading.Barrier(24, timeout=30)\n"
        "def solve(task, llm):\n"
        "    met = []\n"
        "    def wait():\n"
        "        try:\n"
        "            ALL.wait()\n"
        "            met.append(True)\n"
        "        except threading.BrokenBarrierError:\n"
        "            met.append(False)\n"
        "    threads = [threading.Thread(target=wait) for _ in range(12)]\n"
        "    for t in threads:\n"
        "        t.start()\n"
        "    for t in threads:\n"
        "        t.join()\n"
        "    return 'ok' if all(met) else 'the 24 threads were never alive together'\n"
    )
    files = {**seed_files(), "scaffold/solve.py": solve_source}
    result = solve(files, tasks[:2], agent_pool, gateway, FAST)
    assert [(a.program, a.error) for a in result.attempts] == [("ok", None), ("ok", None)]


def test_scaffold_exception_becomes_an_attempt_error(agent_pool, gateway, tasks):
    files = {
        **seed_files(),
        "scaffold/solve.py": "def solve(task, llm):\n    raise ValueError('nope')\n",
    }
    result = solve(files, tasks[:1], agent_pool, gateway, FAST)
    (attempt,) = result.attempts
    assert attempt.program == "" and "ValueError: nope" in attempt.error


def test_selftest_passes_for_the_seed_and_catches_breakage(agent_pool):
    limits = Limits(wall_s=60, cpu_s=60)
    (ok,) = agent_pool.run([selftest_job(seed_files(), limits)])
    assert ok.status is Status.PASSED and ok.kept[0]["failures"] == []
    assert ok.kept[0]["passed"] >= 3
    broken = {**seed_files(), "scaffold/text.py": "def code_blocks(text):\n    return []\n"}
    (bad,) = agent_pool.run([selftest_job(broken, limits)])
    assert bad.kept[0]["failures"], bad


def test_the_hand_written_improvement_passes_its_tests_and_solves_through_the_gateway(
    agent_pool, gateway, tasks
):
    """benchmarks/scaffolds/selftests, the scaffold compared with the seed: its own tests pass in
    the sandbox, and its four calls per task (continuation, chat, samples, asserts), sent from
    threads, all go through the gateway."""
    files = {**seed_files(), **read_files(IMPROVED_SCAFFOLD)}
    (check,) = agent_pool.run([selftest_job(files, Limits(wall_s=60, cpu_s=60))])
    assert check.status is Status.PASSED and check.kept[0]["failures"] == [], check
    assert check.kept[0]["passed"] >= 8  # its own 5 and the seed's 3
    files = short(files)
    files["scaffold/settings.py"] = files["scaffold/settings.py"].replace(
        "CHAT_MAX_TOKENS = 512", "CHAT_MAX_TOKENS = 16"
    )
    result = solve(files, tasks[:2], agent_pool, gateway, FAST)
    assert [a.error for a in result.attempts] == [None, None]
    calls = [c for s in result.sessions for c in s.calls]
    assert len(calls) == 4 * 2
    assert all(a.program for a in result.attempts)


HOSTILE_IMPROVE = """import os


def improve(workspace, problem_statement, llm):
    os.symlink("/etc/hostname", os.path.join(workspace, "{name}"))
"""


@pytest.mark.parametrize("name", ["leak.txt", "linked-dir"])
def test_improve_cannot_hand_back_what_a_link_points_at(agent_pool, gateway, name):
    """The in-container walker reports a link as what it is (the host checks again anyway)."""
    files = {**seed_files(), "scaffold/improve.py": HOSTILE_IMPROVE.format(name=name)}
    if name == "linked-dir":
        files["scaffold/improve.py"] = files["scaffold/improve.py"].replace(
            '"/etc/hostname"', '"/etc"'
        )
    token = gateway.open_session("hostile-improve", Budget(tokens=16, seconds=60, calls=1))
    try:
        (verdict,) = agent_pool.run(
            [improve_job(files, "do it", token, Limits(wall_s=60, cpu_s=60))]
        )
    finally:
        gateway.close_session(token)
    assert verdict.status is not Status.PASSED, verdict.kept
    assert "not a regular file" in verdict.detail and name in verdict.detail


def test_what_improve_says_comes_back_bounded_and_printable():
    changes, note = improve_report(
        {"changes": {"a.py": "x = 1\n"}, "note": "kept\x1b[2J" + "y" * 5000}
    )
    assert changes == {"a.py": "x = 1\n"}
    assert note.startswith("kept?[2J") and len(note) == IMPROVE_NOTE_CHARS
    assert improve_report({"changes": {}, "note": 42}) == ({}, "")  # not a string: no note
    for hostile in (None, [], {"changes": {}}, {"changes": {}, "note": "", "extra": 1}):
        with pytest.raises(ValueError, match="malformed report from improve"):
            improve_report(hostile)


def test_check_changes_rejects_bad_diffs():
    assert "empty diff" in check_changes({}, ())
    assert "protected" in check_changes({"lineage_llm.py": "x = 1\n"}, ("lineage_llm.py",))
    assert "syntax error" in check_changes({"scaffold/solve.py": "def (:\n"}, ())
    assert "outside" in check_changes({"../evil.py": "x = 1\n"}, ())
    assert check_changes({"scaffold/settings.py": "SAMPLES = 3\n"}, ()) is None


def test_propose_validate_commit_evaluate_with_a_scripted_endpoint(
    agent_pool, scoring_pool, gateway, backend, tasks, tmp_path
):
    seed = short(seed_files())
    failed = solve(seed, tasks, agent_pool, gateway, FAST, scoring=Scoring(scoring_pool)).attempts
    assert any(not a.passed for a in failed)
    solutions = {t.prompt: t.reference for t in tasks if t.reference}
    scripted = ScriptedEndpoint("It stopped too early. Sample more.", NEW_KNOBS)
    backend.solutions, backend.asked = solutions, []
    try:
        proposal = propose(
            seed, failures.failed(failed), agent_pool, gateway, proposer=scripted.endpoint
        )
    finally:
        scripted.close()
        backend.solutions = {}
    assert proposal.ok, proposal.failure
    assert proposal.diagnosis == "It stopped too early. Sample more."
    settings = seed["scaffold/settings.py"]
    expected = settings.replace("SAMPLES = 1 ", "SAMPLES = 2 ").replace(
        "TEMPERATURE = 0.0 ", "TEMPERATURE = 0.7 "
    )
    assert expected != settings
    assert proposal.changes == {"scaffold/settings.py": expected}  # two knob lines, nothing else
    # the validated child (what the self-test ran) is the parent with those lines changed
    assert proposal.files == apply_changes(seed, proposal.changes)
    child_settings = proposal.files["scaffold/settings.py"].splitlines()
    assert any(line.startswith("SAMPLES = 2") for line in child_settings)
    assert proposal.flags == []
    assert "wrote" in proposal.note and "SAMPLES" in proposal.note, proposal.note  # it says so
    # the proposer (the scripted endpoint) got the diagnosis and improve's greedy and sampled
    # proposals (it answers the same text each time: one proposal), nothing else; the checks
    # ran on the policy the child runs with: solve on each shown failed task's examples with
    # today's knobs (greedy: junk), then on the failing ones (at most 3) with the proposal's
    # (sampled: the task's reference, so it does better and is kept) and with up to four
    # one-knob neighbours' (a retry neighbour: 2 calls)
    shown = min(DEFAULT_EDIT.failures_shown, sum(not a.passed for a in failed))
    assert len(scripted.requests) == 3
    assert all("Sample more." in r["messages"][1]["content"] for r in scripted.requests[1:3])
    statement = scripted.requests[1]["messages"][1]["content"]
    assert statement.count("Task prompt:") == shown  # the diagnosed task and the others
    checks = backend.asked
    assert shown + 1 <= len(checks) <= shown + 3 * 5 * 2
    assert [t for _, t in checks[:shown]] == [0.0] * shown  # today's, all greedy
    assert 0.7 in [t for _, t in checks[shown:]]  # the proposal's, tried after
    assert {p for p, _ in checks} <= set(solutions)  # the failed tasks' own prompts

    with Archive(tmp_path / "run") as archive:
        root = archive.add_root("tiny", "0" * 16, files=seed)
        child = archive.add_child(
            root.id,
            "scaffold_edit",
            files=proposal.changes,
            metadata={"diagnosis": proposal.diagnosis},
        )
        archive.checkout(child.id, tmp_path / "child")
    child_files = read_files(tmp_path / "child")
    assert child_files == apply_changes(seed, proposal.changes)
    # the child's scaffold now draws two samples per task, through the same path
    result = solve(child_files, tasks[:2], agent_pool, gateway, FAST, scoring=Scoring(scoring_pool))
    assert all(a.error is None for a in result.attempts)
    assert all(len(s.calls) >= 1 for s in result.sessions)
    assert sum(len(c.texts) for s in result.sessions for c in s.calls) == 4  # 2 tasks x 2


REWRITING_IMPROVE = """import os


def improve(workspace, problem_statement, llm):
    with open(os.path.join(workspace, "scaffold/text.py"), "w") as f:
        f.write({text!r})
"""


@pytest.mark.parametrize(
    "text, why",
    [
        ("def code_blocks(text):\n    return []\n", "self-test failed"),  # drops functions
        ("this is not python (", "syntax error"),
    ],
)
def test_a_broken_edit_becomes_a_failure_not_an_exception(
    agent_pool, gateway, tasks, scoring_pool, text, why
):
    """An agent whose own improve writes a broken file (any agent may): the host's checks and
    the self-test turn it into a failed proposal with the reason."""
    seed = short(seed_files())
    failed = solve(
        seed, tasks[:2], agent_pool, gateway, FAST, scoring=Scoring(scoring_pool)
    ).attempts
    agent = {**seed, "scaffold/improve.py": REWRITING_IMPROVE.format(text=text)}
    scripted = ScriptedEndpoint("Rewrite scaffold/text.py.", "unused")
    try:
        proposal = propose(
            agent, failures.failed(failed), agent_pool, gateway, proposer=scripted.endpoint
        )
    finally:
        scripted.close()
    assert not proposal.ok
    assert why in proposal.failure, proposal.failure


@pytest.mark.slow
def test_the_real_small_model_runs_the_whole_edit_path(sandbox_image, tasks, scoring_pool):
    """SmolLM2 as policy and proposer: solve, diagnose, improve, validate. Its quality is not
    asserted; the path must end in a Proposal (ok or with a reason), never an exception."""
    from agent.gateway import tokenizer_chat_template
    from agent.policy.transformers_backend import TransformersBackendConfig

    threads = torch.get_num_threads()
    small = TransformersBackend.from_config(
        TransformersBackendConfig(model="smollm2-135m", dtype="float32", threads=1)
    )
    try:
        with Gateway(small, GatewayConfig(), tokenizer_chat_template(small.tokenizer)) as g:
            config = SandboxConfig(workers=2, gateway_dir=str(Path(g.socket_path).parent))
            with SandboxPool(config, image=sandbox_image) as pool:
                attempts = solve(
                    short(seed_files()), tasks[:2], pool, g, FAST, scoring=Scoring(scoring_pool)
                ).attempts
                assert all(a.error is None for a in attempts)
                edit = EditConfig(improve_tokens=256, diagnosis_tokens=96, improve_wall_s=240)
                proposal = propose(seed_files(), failures.failed(attempts), pool, g, edit)
    finally:
        torch.set_num_threads(threads)
    assert proposal.tokens > 0
    assert proposal.ok or proposal.failure
    if any(not a.passed for a in attempts):
        assert proposal.diagnosis  # the model said something about the failure


def test_a_proposer_without_its_api_key_is_a_failure_not_an_exception(gateway, tasks, monkeypatch):
    from sandbox import Verdict

    monkeypatch.delenv("LINEAGE_TEST_MISSING_KEY", raising=False)
    endpoint = ExternalEndpoint(
        "http://127.0.0.1:9/v1", "m", api_key_env="LINEAGE_TEST_MISSING_KEY"
    )
    failed = [solving.Attempt(tasks[0], -1, "x", None, Verdict(Status.FAILED, detail="wrong"))]
    proposal = propose(seed_files(), failures.failed(failed), None, gateway, proposer=endpoint)
    assert not proposal.ok and "LINEAGE_TEST_MISSING_KEY" in proposal.failure
