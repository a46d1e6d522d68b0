"""What cleanup bombs cost a scoring run: `lineage score` on HumanEval's 164 canonical solutions,
as they are and with 10 of them turned into bombs that also leave a folder 1,500 levels deep in
/tmp (the bomb of issue 22, which made the old recursive wipe fail and each such job cost two
container restarts and end as an infra error). The bombs stay correct, so a sound sandbox passes
all 164 both times and only the wipe's extra work shows in the time.

    python benchmarks/bomb_bench.py --json bombs.json [--bombs 10] [--tree /path/to/checkout]

`--tree` runs another checkout's `lineage score` (e.g. one before the fix) on the same samples.
Figures: medians of --repeats alternating runs, reference runtimes calibrated beforehand.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from figures import print_figures  # noqa: E402

from evaluators.datasets import load_humaneval  # noqa: E402

BOMB = (
    "    import os\n"
    "    if not os.path.exists('/tmp/d'):\n"
    "        here = os.getcwd()\n"
    "        os.chdir('/tmp')\n"
    "        for _ in range(1500):\n"
    "            os.mkdir('d')\n"
    "            os.chdir('d')\n"
    "        os.chdir(here)\n"
)


def write_samples(path: Path, bombs: int) -> None:
    """The canonical solutions; every (164 // bombs)-th one starts with the bomb."""
    tasks = load_humaneval()
    every = len(tasks) // bombs if bombs else 0
    rows = []
    for i, t in enumerate(tasks):
        bombed = bool(every) and i % every == 0 and i // every < bombs
        rows.append({"task_id": t.task_id, "completion": (BOMB if bombed else "") + t.reference})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def time_score(tree: Path, samples: Path, workers: int, cache: Path) -> dict:
    cmd = [sys.executable, "-m", "agent.cli", "score", str(samples), "--workers", str(workers)]
    env = dict(os.environ, LINEAGE_CACHE=str(cache), PYTHONPATH=str(tree))
    start = time.perf_counter()
    done = subprocess.run([*cmd, "--k", "1"], env=env, cwd=tree, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    summary_file = Path(f"{samples}_summary.json")
    if not summary_file.exists() or done.returncode not in (0, 1):  # 1: infra errors remained
        raise SystemExit(f"lineage score failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    summary = json.loads(summary_file.read_text())
    summary_file.unlink()
    return {"s": elapsed, "passed": summary["verdicts"]["passed"], "infra": summary["infra_errors"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="write the figures here")
    parser.add_argument("--bombs", type=int, default=10, help="solutions turned into bombs")
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (median kept)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose CLI runs")
    args = parser.parse_args()
    if not 0 < args.bombs <= 164:
        parser.error("--bombs must be between 1 and 164")

    with tempfile.TemporaryDirectory() as tmp:
        clean, bombed, cache = Path(tmp, "clean.jsonl"), Path(tmp, "bombs.jsonl"), Path(tmp, "c")
        write_samples(clean, 0)
        write_samples(bombed, args.bombs)
        time_score(args.tree, clean, args.workers, cache)  # calibrates the timeouts once
        runs: dict[str, list[dict]] = {"clean": [], "bombs": []}
        for _ in range(args.repeats):  # alternate, so load from elsewhere hits both alike
            runs["clean"].append(time_score(args.tree, clean, args.workers, cache))
            runs["bombs"].append(time_score(args.tree, bombed, args.workers, cache))

    clean_s = statistics.median(r["s"] for r in runs["clean"])
    bombs_s = statistics.median(r["s"] for r in runs["bombs"])
    figures = {
        "tree": str(args.tree),
        "tasks": 164,
        "bombs": args.bombs,
        "workers": args.workers,
        "repeats": args.repeats,
        "clean_s": round(clean_s, 3),
        "bombs_s": round(bombs_s, 3),
        "bomb_overhead_s": round(bombs_s - clean_s, 3),
        "clean_passed": min(r["passed"] for r in runs["clean"]),
        "bombs_passed": min(r["passed"] for r in runs["bombs"]),
        "bombs_infra_errors": max(r["infra"] for r in runs["bombs"]),
        "clean_runs_s": [round(r["s"], 3) for r in runs["clean"]],
        "bombs_runs_s": [round(r["s"], 3) for r in runs["bombs"]],
    }
    print_figures(
        f"lineage score, 164 HumanEval canonical solutions, {args.bombs} of them cleanup bombs",
        figures,
        targets={
            "bomb_overhead_s": "a few seconds at most",
            "bombs_passed": "164 (the bombs are correct)",
            "bombs_infra_errors": "0",
        },
    )
    args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
