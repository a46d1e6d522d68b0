"""`lineage score`: bad lines fail before anything runs; a small file is scored end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from evaluators.datasets import load_humaneval

runner = CliRunner()


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "invalid JSON"),
        ('{"task_id": "HumanEval/999", "completion": ""}', "unknown task_id"),
        ('{"task_id": "HumanEval/0"}', "missing field 'completion'"),
        ('{"task_id": "HumanEval/0", "completion": "", "solution": ""}', "has both"),
    ],
)
def test_bad_line_is_named_and_nothing_is_written(tmp_path: Path, bad: str, message: str) -> None:
    samples = write(
        tmp_path / "s.jsonl", ['{"task_id": "HumanEval/0", "completion": "    pass"}', bad]
    )
    result = runner.invoke(app, ["score", "--benchmark", "humaneval", str(samples)])
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "s.jsonl:2" in output and message in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"]


def test_unreadable_input_is_one_line_exit_2_and_nothing_written(tmp_path: Path) -> None:
    """A samples file with bytes that are not UTF-8, and a user benchmark whose tests nest past
    the parser's depth, used to end in a traceback."""
    samples = tmp_path / "s.jsonl"
    samples.write_bytes(b'{"task_id": "HumanEval/0", "completion": "    return \xff"}\n')
    tests = "def check(candidate):\n    assert candidate() == " + "1+" * 100_000 + "1\n"
    task = {"task_id": "t/0", "prompt": "def f():\n", "entry_point": "f", "tests": tests}
    bench = write(tmp_path / "b.jsonl", [json.dumps(task)])
    for args, where in (
        (["--benchmark", "humaneval", str(samples)], "s.jsonl:1"),
        (["--benchmark", str(bench), str(write(samples, ['{"task_id": "t/0"}']))], "b.jsonl:1"),
    ):
        result = runner.invoke(app, ["score", *args])
        assert result.exit_code == 2, result.exception
        output = " ".join(result.output.split())
        assert output.startswith("error:") and where in output and "Traceback" not in output
        assert sorted(p.name for p in tmp_path.iterdir()) == ["b.jsonl", "s.jsonl"]


def test_bad_k(tmp_path: Path) -> None:
    samples = write(tmp_path / "s.jsonl", ['{"task_id": "HumanEval/0", "completion": "    pass"}'])
    result = runner.invoke(app, ["score", str(samples), "--k", "one"])
    assert result.exit_code != 0


@pytest.mark.docker
def test_scores_a_small_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sandbox.pool")
    monkeypatch.setenv("LINEAGE_CACHE", str(tmp_path / "cache"))
    tasks = load_humaneval()[:3]
    lines = []
    for t in tasks:
        lines.append(json.dumps({"task_id": t.task_id, "completion": t.reference}))
        lines.append(json.dumps({"task_id": t.task_id, "completion": "    pass\n"}))
    samples = write(tmp_path / "s.jsonl", lines)
    result = runner.invoke(app, ["score", str(samples), "--workers", "2", "--k", "1,2,5"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in Path(f"{samples}_results.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in rows] == [json.loads(x)["task_id"] for x in lines]
    assert [r["passed"] for r in rows] == [True, False] * 3
    assert rows[0]["result"] == "passed" and rows[1]["result"].startswith("failed")
    summary = json.loads(Path(f"{samples}_summary.json").read_text())
    assert summary["pass@1"] == pytest.approx(0.5) and summary["pass@2"] == pytest.approx(1.0)
    assert "pass@5" not in summary
    assert summary["verdicts"]["passed"] == 3 and summary["verdicts"]["failed"] == 3
    assert "pass@1" in result.output


BOMB = (
    "    import os\n    os.chdir('/tmp')\n    for _ in range(1500):\n        os.mkdir('d')\n"
    "        os.chdir('d')\n    return None\n"
)


@pytest.mark.docker
def test_a_cleanup_bomb_is_a_failed_sample_and_cannot_raise_pass_at_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's measurement: two tasks, one right and one wrong sample each (pass@1 0.5),
    with a folder 1,500 deep left in /tmp by one wrong sample. It read 0.75 when the bomb's job
    became an infra error that pass@k left out."""
    monkeypatch.setenv("LINEAGE_CACHE", str(tmp_path / "cache"))
    tasks = load_humaneval()[:2]
    lines = []
    for t, wrong in zip(tasks, ["    return None\n", BOMB], strict=True):
        lines.append(json.dumps({"task_id": t.task_id, "completion": t.reference}))
        lines.append(json.dumps({"task_id": t.task_id, "completion": wrong}))
    samples = write(tmp_path / "s.jsonl", lines)
    result = runner.invoke(app, ["score", str(samples), "--workers", "1", "--k", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(Path(f"{samples}_summary.json").read_text())
    assert summary["pass@1"] == pytest.approx(0.5), summary
    assert summary["pass@1_infra_excluded"] == pytest.approx(0.5)
    assert summary["infra_errors"] == 0
    rows = [json.loads(x) for x in Path(f"{samples}_results.jsonl").read_text().splitlines()]
    assert rows[3]["result"].startswith("failed"), rows[3]["result"]


class BreakingPool:
    """A pool whose sandbox fails on every program holding BREAK (the engine's own faults are
    tested in test_sandbox_pool.py); everything else passes."""

    def __init__(self, config=None, image=None) -> None:
        pass

    def __enter__(self) -> BreakingPool:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def run_iter(self, jobs):
        from sandbox.job import Status, Verdict

        for index, job in enumerate(jobs):
            broken = "BREAK" in job.program or BreakingPool.everything
            yield index, Verdict(Status.INFRA_ERROR if broken else Status.PASSED)

    everything = False


def test_score_prints_pass_at_k_both_ways_and_fails_on_infra_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sandbox

    monkeypatch.setattr(sandbox, "SandboxPool", BreakingPool)
    tasks = load_humaneval()[:2]
    lines = [json.dumps({"task_id": t.task_id, "completion": t.reference}) for t in tasks]
    lines.append(json.dumps({"task_id": tasks[1].task_id, "completion": "    # BREAK\n"}))
    samples = write(tmp_path / "s.jsonl", lines)
    result = runner.invoke(app, ["score", str(samples), "--no-calibrate", "--k", "1"])
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())
    assert "pass@1 (infra errors as failed) │ 0.7500" in output
    assert "pass@1 (infra errors left out) │ 1.0000" in output
    assert "the sandbox failed on 1 job(s)" in output
    summary = json.loads(Path(f"{samples}_summary.json").read_text())  # written all the same
    assert summary["pass@1"] == pytest.approx(0.75) and summary["pass@1_infra_excluded"] == 1.0


def test_eval_reports_a_task_with_only_infra_errors_without_crashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_dir: Path
) -> None:
    import sandbox

    monkeypatch.setattr(sandbox, "SandboxPool", BreakingPool)
    monkeypatch.setattr(BreakingPool, "everything", True)
    monkeypatch.setenv("LINEAGE_CACHE", str(tmp_path / "cache"))
    args = ["eval", "--model", str(tiny_dir), "--limit", "1", "--max-new-tokens", "2"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, TypeError)
    assert "pass@1 0.0000 (0/1), n/a with infra errors left out" in " ".join(result.output.split())
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert report["pass@1"] == 0.0 and report["pass@1_infra_excluded"] is None
    assert report["infra_errors"] == 1
