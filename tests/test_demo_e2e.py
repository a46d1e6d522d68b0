"""The main job the way the README starts it: `lineage run CONFIG --run-dir runs/NAME`, both
paths relative to the folder it is typed in, with the real default model, which can solve easy
MBPP tasks. A run whose agents never reach the model would score 0 here and fail the test (as
`make demo` once did, while every test on absolute temporary paths passed).

Then the other commands a user runs on that run, from another folder, through a symlink, with
relative paths: `status`, `graph`, `resume`.

The config names no backend, as the README's does not: where vLLM is installed this is the loop
on vLLM end to end (agents, the ES population as LoRA adapters, evaluations, the edit).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from archive import Archive, Status

LINEAGE = [sys.executable, "-m", "agent.cli"]

# The demo's settings, cut to a few minutes: 4 train tasks and 2 dev tasks for every node, an ES
# step and a scaffold edit.
CONFIG = """\
seed = 0
[model]
name = "default"
[tasks]
train = "mbpp:train"
dev = "mbpp:dev"
heldout = "mbpp:test"
stage1_tasks = 4
stage1_margin = 1.0
dev_tasks = 2
heldout_tasks = 2
[budget]
iterations = 2
[operators]
es_step = 1
scaffold_edit = 1
order = "cycle"
[es]
population = 2
tasks_per_step = 2
alpha = 2e-6
[edit]
improve_tokens = 256
improve_wall_s = 300
[solve]
tasks_per_job = 4
threads = 4
wall_s = 600
max_tokens_per_call = 192
[sandbox]
agent_workers = 2
scoring_workers = 2
"""


def lineage(*args: str, cwd: Path, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LINEAGE, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def read_events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


@pytest.mark.docker
@pytest.mark.slow
def test_a_run_started_as_the_readme_starts_it_scores_real_programs(tmp_path):
    work = tmp_path / "my work"  # a space in the path, as a user's folder may have
    (work / "configs").mkdir(parents=True)
    (work / "configs" / "e2e.toml").write_text(CONFIG)

    run = lineage("run", "configs/e2e.toml", "--run-dir", "runs/e2e", cwd=work)
    assert run.returncode == 0, run.stderr[-3000:]
    run_dir = work / "runs" / "e2e"
    with Archive(run_dir, readonly=True) as archive:
        nodes = {n.id: n for n in archive.nodes()}
    root = nodes["n0000"]
    assert root.status is Status.EVALUATED
    assert root.scores["train"].score > 0, root.metadata["failures"]
    outcomes = root.metadata["outcomes"]
    for split, n in (("train", 4), ("dev", 2)):
        # every task got a program from the agent (right or wrong), none an agent error
        assert outcomes[split]["agent_error"] == 0, (split, outcomes, root.metadata["failures"])
        assert outcomes[split]["passed"] + outcomes[split]["wrong"] == n
        assert root.scores[split].n == n
    assert "heldout" in root.scores
    assert set(nodes) == {"n0000", "n0001", "n0002"}
    edit = nodes["n0002"]  # the scaffold edit ran the seed's improve in the sandbox
    assert "ModuleNotFoundError" not in (edit.failure_reason or ""), edit.failure_reason
    kinds = {e["event"] for e in read_events(run_dir)}
    assert not kinds & {"agent_error", "infra_error"}, kinds
    assert "base vs best node" in run.stdout

    # The same run from another folder, through a symlink, with relative paths.
    (tmp_path / "link").symlink_to(work / "runs")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    status = lineage("status", "../link/e2e", cwd=elsewhere, timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    assert "agent errors" in status.stdout and "n0002" in status.stdout
    graph = lineage(
        "graph", "../link/e2e", "--html", "g.html", "--png", "g.png", cwd=elsewhere, timeout=300
    )
    assert graph.returncode == 0, graph.stderr[-2000:]
    assert "n0002" in (elsewhere / "g.html").read_text()
    assert (elsewhere / "g.png").stat().st_size > 10_000
    resume = lineage("resume", "../link/e2e", cwd=elsewhere)  # budget spent: stops at once
    assert resume.returncode == 0, resume.stderr[-3000:]
    with Archive(run_dir, readonly=True) as archive:
        assert set(archive.ids()) == set(nodes)


@pytest.mark.docker
@pytest.mark.slow
def test_a_base_node_whose_agent_produced_nothing_stops_the_run_with_exit_1(tiny_dir, tmp_path):
    """No program for any task (here: every agent job runs out of time at once) is a broken
    setup, not a score of 0: exit 1 with the error and a likely fix, and what is stored stays."""
    config = tmp_path / "c.toml"
    config.write_text(
        f'[model]\nname = "{tiny_dir}"\nbackend = "transformers"\nthreads = 1\n'
        "[tasks]\nstage1_tasks = 2\ndev_tasks = 2\n"
        "heldout_tasks = 2\n[solve]\nwall_s = 0.2\n[sandbox]\nagent_workers = 1\n"
        "scoring_workers = 1\n"
    )
    run = lineage("run", "c.toml", "--run-dir", "r", cwd=tmp_path, timeout=600)
    assert run.returncode == 1, (run.stdout[-2000:], run.stderr[-3000:])
    assert "the base node's agent (the seed scaffold) produced no program" in run.stderr
    assert "timeout" in run.stderr and "[solve] wall_s" in run.stderr  # the error, the fix
    with Archive(tmp_path / "r", readonly=True) as archive:
        assert archive.get("n0000").status is Status.PENDING
        assert archive.get("n0000").scores == {}
