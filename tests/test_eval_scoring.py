"""Scoring logic against a fake pool: timeouts re-run once, infra errors kept apart, rewards,
summaries and results files. (Real-sandbox behaviour lives in test_eval_docker.py.)"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from evaluators.rewards import WORST_FITNESS, RewardConfig, fitness, reward
from evaluators.samples import (
    SamplesFileError,
    read_samples,
    results_path,
    summarize,
    write_results,
)
from evaluators.scoring import Candidate, result_text, score
from evaluators.task import Task
from evaluators.timeouts import TimeoutPolicy, calibrate, uncalibrated
from sandbox.job import CheckOutcome, CheckResult, Job, Status, Verdict

TASKS = {
    f"T/{i}": Task(
        f"T/{i}",
        "def f(x):\n",
        "f",
        "def check(candidate):\n    assert candidate(1) == 1\n    assert candidate(2) == 2\n",
        "unit",
        "    return x\n",
    )
    for i in range(3)
}


def verdict(status: Status, passed: int = 0, total: int = 2, duration: float = 0.1) -> Verdict:
    outcomes = [CheckOutcome.PASSED] * passed + [CheckOutcome.FAILED] * (total - passed)
    return Verdict(
        status, tuple(CheckResult(o) for o in outcomes), detail=status.value, duration_s=duration
    )


class FakePool:
    """Answers each job with `judge(job, attempt)` and records what it was asked."""

    def __init__(self, judge: Callable[[Job, int], Verdict]) -> None:
        self.judge = judge
        self.calls: list[list[Job]] = []
        self.seen: dict[str, int] = {}

    def run_iter(self, jobs: Sequence[Job]):
        self.calls.append(list(jobs))
        for index in reversed(range(len(jobs))):  # out of order, as a real pool may answer
            key = jobs[index].program
            self.seen[key] = self.seen.get(key, 0) + 1
            yield index, self.judge(jobs[index], self.seen[key])


def test_timeout_is_rerun_once_and_second_verdict_counts() -> None:
    def judge(job: Job, attempt: int) -> Verdict:
        if "flaky" in job.program:
            return verdict(Status.TIMEOUT) if attempt == 1 else verdict(Status.PASSED, 2)
        if "loop" in job.program:
            return verdict(Status.TIMEOUT)
        return verdict(Status.PASSED, 2)

    t = TASKS["T/0"]
    candidates = [
        Candidate.from_completion(t, c) for c in ("    return x\n", "    # flaky\n", "    # loop\n")
    ]
    pool = FakePool(judge)
    seen: list[int] = []
    verdicts = score(candidates, pool, {"T/0": 1.5}, on_verdict=lambda i, v: seen.append(i))
    assert [v.status for v in verdicts] == [Status.PASSED, Status.PASSED, Status.TIMEOUT]
    assert [len(c) for c in pool.calls] == [3, 2]
    assert verdicts[2].attempts == 2
    assert sorted(seen) == [0, 1, 2]
    assert all(job.limits.wall_s == 1.5 for job in pool.calls[0])


def test_calibration_uses_reference_runtime_with_floor(tmp_path: Path) -> None:
    durations = {"T/0": 0.1, "T/1": 2.0}

    def judge(job: Job, attempt: int) -> Verdict:
        if job.tag == "T/2":
            return verdict(Status.FAILED, 1)
        return verdict(Status.PASSED, 2, duration=durations[job.tag])

    policy = TimeoutPolicy(floor_s=3.0, factor=4.0, ceiling_s=6.0)
    pool = FakePool(judge)
    cache = tmp_path / "runtimes.json"
    timeouts = calibrate(list(TASKS.values()), pool, policy, cache)
    assert timeouts == {"T/0": 3.0, "T/1": 6.0, "T/2": policy.no_reference_s}
    assert calibrate(list(TASKS.values()), pool, policy, cache)["T/1"] == 6.0
    assert [len(c) for c in pool.calls] == [3, 1]  # cached ones are not measured again
    assert uncalibrated(list(TASKS.values()), policy)["T/0"] == 3.0


def test_rewards_mix_and_separate_format() -> None:
    half = verdict(Status.FAILED, 1)
    full = verdict(Status.PASSED, 2)
    assert reward(half, RewardConfig(pass_weight=1, fraction_weight=0)).correctness == 0.0
    assert reward(half, RewardConfig(pass_weight=0, fraction_weight=1)).correctness == 0.5
    r = reward(half)
    assert r.correctness == pytest.approx(0.25) and r.fraction == 0.5 and not r.passed
    r = reward(full, RewardConfig(format_weight=0.5), format_score=1.0)
    assert r.correctness == 1.0 and r.format == 0.5 and r.total == 1.5
    assert reward(verdict(Status.INFRA_ERROR)) is None
    with pytest.raises(ValueError):
        RewardConfig(pass_weight=0, fraction_weight=0)
    with pytest.raises(ValueError):
        RewardConfig(pass_weight=-1)


def write_samples(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{oops", "invalid JSON"),
        ('{"task_id": "T/9", "completion": ""}', "unknown task_id"),
        ('{"task_id": "T/0"}', "missing field 'completion'"),
        ('{"completion": ""}', "missing field 'task_id'"),
        ('{"task_id": "T/0", "completion": 5}', "must be a string"),
        ('{"task_id": "T/0", "solution": null}', "field 'solution' must be a string"),
        (
            '{"task_id": "T/0", "reply": "x"}',
            "missing field 'completion' (appended to the prompt) or 'solution'",
        ),
        (
            '{"task_id": "T/0", "completion": "", "solution": ""}',
            "has both 'completion' and 'solution'",
        ),
    ],
)
def test_bad_sample_lines_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = write_samples(tmp_path, ['{"task_id": "T/0", "completion": ""}', line])
    with pytest.raises(SamplesFileError) as info:
        read_samples(path, TASKS)
    assert info.value.line == 2 and f"{path}:2" in str(info.value) and message in str(info.value)


def test_completion_or_solution_per_line(tmp_path: Path) -> None:
    """A completion is appended to the prompt; a solution (EvalPlus's field) is the program."""
    whole = "import math\n\ndef f(x):\n    return math.floor(x)\n"
    lines = [
        json.dumps({"task_id": "T/0", "completion": "    return x\n"}),
        json.dumps({"task_id": "T/1", "solution": whole, "reply": "raw"}),
    ]
    samples = read_samples(write_samples(tmp_path, lines), TASKS)
    assert [s.program(TASKS[s.task_id]) for s in samples] == ["def f(x):\n    return x\n", whole]
    assert samples[1].record["reply"] == "raw"  # written back with the verdict


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b'{"task_id": "T/0", "completion": "\xe9"}', "not UTF-8"), (b"[" * 100_000, "too deeply")],
)
def test_unparseable_sample_lines_name_the_line(tmp_path: Path, raw: bytes, message: str) -> None:
    """Latin-1 bytes and JSON nested past the parser's depth were a traceback."""
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"task_id": "T/0", "completion": ""}\n' + raw + b"\n")
    with pytest.raises(SamplesFileError) as info:
        read_samples(path, TASKS)
    assert info.value.line == 2 and f"{path}:2" in str(info.value) and message in str(info.value)


def test_results_and_summary(tmp_path: Path) -> None:
    lines = [
        json.dumps({"task_id": tid, "completion": str(i), "extra": i})
        for i, tid in enumerate(["T/0", "T/0", "T/1", "T/1", "T/1"])
    ]
    path = write_samples(tmp_path, lines)
    samples = read_samples(path, TASKS)
    verdicts = [
        verdict(Status.PASSED, 2),
        verdict(Status.FAILED, 1),
        verdict(Status.TIMEOUT),
        verdict(Status.INFRA_ERROR),
        verdict(Status.ERROR),
    ]
    write_results(results_path(path), samples, verdicts)
    rows = [json.loads(line) for line in results_path(path).read_text().splitlines()]
    assert [r["extra"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["passed"] for r in rows] == [True, False, False, False, False]
    assert rows[0]["result"] == "passed" and rows[1]["result"].startswith("failed")
    assert rows[3]["result"].startswith("infra_error")
    summary = summarize(samples, verdicts, ks=[1, 2, 3])
    assert summary["pass@1"] == pytest.approx((0.5 + 0.0) / 2)
    assert summary["pass@2"] == pytest.approx((1.0 + 0.0) / 2)
    assert "pass@3" not in summary  # T/0 has only 2 samples
    assert summary["verdicts"] == {
        "passed": 1,
        "failed": 1,
        "timeout": 1,
        "error": 1,
        "infra_error": 1,
    }
    assert summary["infra_errors"] == 1


def test_pass_at_k_comes_both_ways_and_infra_never_raises_it(tmp_path: Path) -> None:
    """Two tasks, one right and one wrong sample each, then the wrong sample of T/1 breaks the
    sandbox: counted as failed pass@1 stays 0.5; left out it reads 0.75."""
    lines = [json.dumps({"task_id": t, "completion": ""}) for t in ("T/0", "T/0", "T/1", "T/1")]
    samples = read_samples(write_samples(tmp_path, lines), TASKS)
    right, wrong = verdict(Status.PASSED, 2), verdict(Status.FAILED, 1)
    summary = summarize(samples, [right, wrong, right, verdict(Status.INFRA_ERROR)], ks=[1, 2])
    assert summary["pass@1"] == pytest.approx(0.5) and summary["pass@2"] == 1.0
    assert summary["pass@1_infra_excluded"] == pytest.approx(0.75)
    assert "pass@2_infra_excluded" not in summary  # T/1 kept one sample
    assert summary["infra_errors"] == 1 and summary["min_samples_per_task"] == 2


def test_a_task_with_only_infra_errors_still_has_a_pass_at_1(tmp_path: Path) -> None:
    lines = [json.dumps({"task_id": t, "completion": ""}) for t in ("T/0", "T/1")]
    samples = read_samples(write_samples(tmp_path, lines), TASKS)
    summary = summarize(samples, [verdict(Status.PASSED, 2), verdict(Status.INFRA_ERROR)], ks=[1])
    assert summary["pass@1"] == pytest.approx(0.5)
    assert summary["pass@1_infra_excluded"] == 1.0  # T/1 drops out of the mean
    only_infra = summarize(samples[1:], [verdict(Status.INFRA_ERROR)], ks=[1])
    assert only_infra["pass@1"] == 0.0 and "pass@1_infra_excluded" not in only_infra


def test_an_infra_error_gets_the_worst_fitness() -> None:
    assert fitness(None) == WORST_FITNESS == 0.0
    assert fitness(reward(verdict(Status.FAILED, 0))) == WORST_FITNESS  # no better than failing
    assert fitness(reward(verdict(Status.PASSED, 2))) == 1.0


def test_result_text() -> None:
    assert result_text(verdict(Status.PASSED, 2)) == "passed"
    assert (
        result_text(Verdict(Status.FAILED, detail="check 2:\n  AssertionError"))
        == "failed: check 2: AssertionError"
    )
