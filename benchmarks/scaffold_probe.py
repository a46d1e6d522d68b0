"""Which settings of the seed scaffold help: each variant on the same train/dev tasks, paired.

The loop's own path (the base weights, agent containers, the gateway, the scoring pool), with
knob lines of scaffold/settings.py rewritten per variant. Used to size the demo and to check
that the knob space holds a gain the loop can find; it refuses held-out splits, because choosing
settings on the held-out tasks would be test-set tuning.

    python benchmarks/scaffold_probe.py [--config configs/demo.toml] [--split mbpp-example:dev]
        [--tasks 0] --variant base --variant retry4:RETRY_SAMPLES=4 [--json PATH]

Figures per variant: pass@1, generated tokens, wall seconds, and the paired difference against
the first variant (bootstrap interval, wins and losses, McNemar p).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agent.loop.config import load_config
from agent.loop.evaluation import run_tasks
from agent.loop.runtime import Runtime, model_hash
from agent.scaffold.repo import seed_files
from evaluators.stats import paired_difference

SETTINGS = "scaffold/settings.py"


def variant(spec: str) -> tuple[str, dict[str, object]]:
    """'name:KNOB=value,KNOB=value' -> (name, {knob: value})."""
    name, _, body = spec.partition(":")
    knobs = {}
    for item in filter(None, body.split(",")):
        key, _, raw = item.partition("=")
        knobs[key.strip()] = ast.literal_eval(raw.strip())
    return name, knobs


def with_knobs(source: str, knobs: dict[str, object]) -> str:
    for key, value in knobs.items():
        source, count = re.subn(rf"^{key} = .*$", f"{key} = {value!r}", source, flags=re.M)
        if count != 1:
            sys.exit(f"scaffold_probe: settings.py has no knob {key}")
    return source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/demo.toml"))
    parser.add_argument("--split", default="mbpp-example:dev")
    parser.add_argument("--tasks", type=int, default=0, help="0 = the whole split")
    parser.add_argument("--variant", action="append", type=variant, required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.split.split(":")[-1] == "test":
        sys.exit("scaffold_probe: settings are chosen on train/dev splits, never on a test split")
    config = load_config(args.config)
    # heldout_tasks 1: the runtime calibrates timeouts on every split it loads
    tasks = {"dev": args.split, "dev_tasks": args.tasks, "heldout_tasks": 1}
    config = config.model_copy(update={"tasks": config.tasks.model_copy(update=tasks)})
    figures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as run_dir, Runtime(config, Path(run_dir)) as rt:
        rt.archive.add_root(config.model.name, model_hash(rt.backend), files=seed_files())
        root = rt.archive.ids()[0]
        seed = seed_files()
        baseline = None
        for name, knobs in args.variant:
            files = {**seed, SETTINGS: with_knobs(seed[SETTINGS], knobs)}
            started = time.monotonic()
            judged = run_tasks(rt, root, files, rt.tasks.dev, name)
            passed = [judged.per_task[t.task_id] for t in rt.tasks.dev]
            row = {
                "knobs": knobs,
                "tasks": len(passed),
                "pass_at_1": sum(passed) / len(passed),
                "tokens": judged.tokens,
                "wall_s": round(time.monotonic() - started, 1),
                "agent_errors": judged.outcomes.agent_error,
            }
            if baseline is None:
                baseline = passed
            else:
                diff = paired_difference(baseline, passed)
                row |= {"vs_first": diff.to_json(), "vs_first_text": diff.describe()}
            figures[name] = row
            print(json.dumps({name: row}), flush=True)
    table = Table(title=f"seed scaffold variants on {args.split} ({len(baseline or [])} tasks)")
    for column in ("variant", "pass@1", "tokens", "wall s", "minus the first, paired (95%)"):
        table.add_column(column)
    for name, row in figures.items():
        cells = (f"{row['pass_at_1']:.3f}", str(row["tokens"]), str(row["wall_s"]))
        table.add_row(name, *cells, row.get("vs_first_text", "-"))
    Console().print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
