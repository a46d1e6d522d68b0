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
