"""Efficacy: does evolving weights and code together beat evolving either alone?

Three runs from the same base with the same budget: ES steps only, scaffold edits only, and both
(the mix of the base config). Each reports the held-out pass@1 of its best node by dev score; the
base node's held-out score is the baseline. Held-out tasks are never used for selection.

    python benchmarks/improve.py [--config configs/demo.toml] [--budget-s 7200]
        [--heldout humaneval:test] [--heldout-tasks 0] [--out out/improve] [--json PATH]

Figures: base_heldout, best_heldout_es, best_heldout_edit, best_heldout_both, each gain with its
paired interval and McNemar p (best minus base, task by task), the joint run's best against
each single-operator run's best on the same held-out tasks, each run's time split (wall
seconds by phase, from its event log) and what each operator's children came to (`outcomes_*`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agent.loop.events import read_events
from agent.loop.frontier import results
from archive import Archive, Node
from evaluators.stats import PairedDifference, paired_on_shared

MODES = {
    "es": {"es_step": 1.0, "scaffold_edit": 0.0, "both": 0.0},
    "edit": {"es_step": 0.0, "scaffold_edit": 1.0, "both": 0.0},
    "both": None,  # the base config's own mix
}


def mode_config(base: dict, mode: str, budget_s: float, heldout: str, heldout_tasks: int) -> dict:
    config = json.loads(json.dumps(base))
    if MODES[mode] is not None:
        config.setdefault("operators", {}).update(MODES[mode])
    else:
        ops = config.setdefault("operators", {})
        if not any(ops.get(k, 0) for k in ("scaffold_edit", "both")) or not ops.get("es_step", 0.5):
            ops.update({"es_step": 0.5, "scaffold_edit": 0.5})
    budget = config.setdefault("budget", {})
    budget["iterations"] = 1_000_000  # the wall clock decides
    budget["wall_clock_s"] = budget_s
    tasks = config.setdefault("tasks", {})
    tasks["heldout"] = heldout
    tasks["heldout_tasks"] = heldout_tasks
    return config


def time_split(events: list[dict]) -> dict[str, float]:
    """Wall seconds by what the run was doing, from its event log: each interval between two
    events is charged to the phase the earlier one opened (the held-out report: to the event
    that ends it)."""
    spans: dict[str, float] = {}
    for a, b in zip(events, events[1:], strict=False):
        kind = a.get("event")
        if b.get("event") == "heldout":
            phase = "held-out report"
        elif kind == "iteration_started":
            phase = f"making {a.get('operator')} children"
        elif kind == "evaluation_started":
            phase = "judging the base" if a.get("node") == "n0000" else "judging children"
        elif kind == "run_started":
            phase = "start (engine, sandbox, timeouts)"
        else:
            phase = "between (selection, storing)"
        spans[phase] = spans.get(phase, 0.0) + max(0.0, b["t"] - a["t"])
    return dict(sorted(spans.items(), key=lambda kv: -kv[1]))


def to_toml(data: dict) -> str:
    """Enough TOML for a run config: scalars, lists, one level of tables."""

    def value(v):
        return json.dumps(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, table in data.items():
        if isinstance(table, dict):
            lines.append(f"\n[{section}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def heldout_of(run_dir: Path) -> tuple[Node, Node]:
    """The base node and the run's answer (the dev frontier), as the run's report judged them."""
    from agent.loop.config import load_saved
    from agent.loop.frontier import ROOT_ID, frontier

    alpha = load_saved(run_dir).selection.frontier_alpha
    with Archive(run_dir, readonly=True) as archive:
        best_id, _ = frontier(archive, alpha)
        return archive.get(ROOT_ID), archive.get(best_id)


def outcomes_of(run_dir: Path) -> dict[str, dict[str, object]]:
    """Each operator's yield: children made, failed (by reason), judged on dev, above parent."""
    from agent.loop.config import load_saved
    from agent.loop.outcomes import operator_outcomes

    alpha = load_saved(run_dir).selection.frontier_alpha
    with Archive(run_dir, readonly=True) as archive:
        nodes = list(archive.nodes())
    return {op: row.to_json() for op, row in operator_outcomes(nodes, alpha).items()}


def paired(a: Node, b: Node) -> PairedDifference | None:
    """b minus a on the held-out tasks both were judged on."""
    mine, theirs = results(b, "heldout"), results(a, "heldout")
    return paired_on_shared(theirs, mine) if mine and theirs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/demo.toml"))
    parser.add_argument("--budget-s", type=float, default=7200.0)
    parser.add_argument("--heldout", default="humaneval:test")
    parser.add_argument(
        "--heldout-tasks", type=int, default=0, help="a seeded sample of the split (0 = all of it)"
    )
    parser.add_argument("--out", type=Path, default=Path("out/improve"))
    parser.add_argument("--modes", default="es,edit,both")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    base = tomllib.loads(args.config.read_text())
    console = Console(stderr=True)
    figures: dict[str, object] = {
        "budget_s": args.budget_s,
        "heldout": args.heldout,
        "heldout_tasks": args.heldout_tasks,
    }
    rows = []
    bests: dict[str, Node] = {}
    for mode in args.modes.split(","):
        run_dir = args.out / mode
        cfg = args.out / f"{mode}.toml"
        args.out.mkdir(parents=True, exist_ok=True)
        cfg.write_text(
            to_toml(mode_config(base, mode, args.budget_s, args.heldout, args.heldout_tasks))
        )
        command = (
            ["lineage", "resume", str(run_dir)]
            if (run_dir / "config.json").exists()
            else ["lineage", "run", str(cfg), "--run-dir", str(run_dir)]
        )
        console.print(f"== {mode}: {' '.join(command)}", highlight=False)
        subprocess.run([sys.executable, "-m", "agent.cli", *command[1:]], check=True)
        base, best = heldout_of(run_dir)
        bests[mode] = best
        score = lambda n: n.scores["heldout"].score if "heldout" in n.scores else None  # noqa: E731
        figures.setdefault("base_heldout", score(base))
        figures[f"best_heldout_{mode}"] = score(best)
        figures[f"best_node_{mode}"] = best.id
        gain = paired(base, best)
        if gain is not None:
            figures[f"gain_{mode}"] = gain.diff
            figures[f"gain_{mode}_paired"] = gain.to_json()
        rows.append((mode, best.id, score(base), score(best), gain))
        figures[f"outcomes_{mode}"] = outcomes_of(run_dir)
        split = time_split(list(read_events(run_dir / "events.jsonl")))
        figures[f"time_split_{mode}"] = split
        total = sum(split.values()) or 1.0
        console.print(
            f"{mode} time split: "
            + ", ".join(f"{k} {v:.0f} s ({v / total:.0%})" for k, v in split.items()),
            highlight=False,
        )
    if "both" in bests:  # the joint run against each single-operator run, task by task
        for mode in ("es", "edit"):
            if mode in bests:
                versus = paired(bests[mode], bests["both"])
                if versus is not None:
                    figures[f"both_vs_{mode}_paired"] = versus.to_json()
                    rows.append((f"both vs {mode}", bests["both"].id, None, None, versus))
    table = Table(title=f"held-out pass@1 ({args.heldout}), {args.budget_s:.0f} s per run")
    for col in ("run", "best node (by dev)", "base", "best", "best minus base, paired (95%)"):
        table.add_column(col)
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for mode, best_id, b, s, gain in rows:
        table.add_row(mode, best_id, fmt(b), fmt(s), gain.describe() if gain else "-")
    Console().print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
