"""`lineage eval`: generate with the real small model, score in the sandbox, write the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from agent.cli import app

runner = CliRunner()


def test_unknown_backend_is_refused() -> None:
    result = runner.invoke(app, ["eval", "--backend", "tgi", "--limit", "1"])
    assert result.exit_code == 2


def test_vllm_backend_without_the_extra_says_how_to_get_it(tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "vllm" else find_spec(name, *a),
    )
    args = ["eval", "--backend", "vllm", "--model", "smollm2-135m", "--limit", "1"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "pip install -e '.[vllm]'" in result.output


@pytest.mark.docker
@pytest.mark.slow
def test_eval_generates_scores_and_writes_results(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    args = ["eval", "--model", "smollm2-135m", "--limit", "2", "--max-new-tokens", "16"]
    args += ["--batch-size", "2", "--threads", "1", "--workers", "1", "--out", str(tmp_path)]
    try:
        result = runner.invoke(app, args)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [s["task_id"] for s in samples] == ["HumanEval/0", "HumanEval/1"]
    assert all(0 < s["num_tokens"] <= 16 for s in samples)
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["tasks"] == 2 and report["model"] == "smollm2-135m"
    assert 0.0 <= report["pass@1"] <= 1.0
    assert report["generation"]["tokens"] == sum(s["num_tokens"] for s in samples)
    assert (tmp_path / "samples.jsonl_results.jsonl").is_file()
    assert "pass@1" in result.output
