"""Real archives (SQLite + git) for the picture and dashboard tests: scaffold edits with diffs,
ES records, a merge, failed and pending nodes, the loop's metadata."""

from __future__ import annotations

import random
import time
from pathlib import Path

from archive import Archive, Cost, NewNode, Score, Status

EDIT_DIFF_LINE = "+    return retry(solve, times=3)"  # a line the edit's diff must show
SCRIPT_BREAKER = "</script><script>alert(1)</script>"  # must not escape the page's data block


def build_lineage(run_dir: Path) -> Archive:
    """Seven nodes, every kind the pictures must draw. Returned open (the caller is the writer)."""
    archive = Archive(run_dir)
    t0 = time.time()
    archive.add_root(
        "smollm2-135m",
        "sha256:base",
        node_id="root",
        files={"agent.py": "def run(solve):\n    return solve()\n", "README": "seed\n"},
        metadata={"evaluated_at": t0 + 1},
    )
    archive.record_scores(
        "root", {"train": Score(0.30, 50), "dev": Score(0.25, 20)}, cost=Cost(100, 2.0, 5.0)
    )
    archive.add_child(
        "root",
        "es_step",
        node_id="es1",
        es_record={"seeds": [11, 12, 13, 14], "sigma": 0.02, "lr": 0.5, "rank": 4},
        metadata={"iteration": 1, "evaluated_at": t0 + 2},
    )
    archive.record_scores("es1", {"train": Score(0.36, 50), "dev": Score(0.30, 20)})
    archive.add_child(
        "root",
        "scaffold_edit",
        node_id="edit1",
        files={
            "agent.py": "def run(solve):\n" + EDIT_DIFF_LINE[1:] + "\n",
            "notes.html": SCRIPT_BREAKER + "\n",
        },
        metadata={
            "iteration": 2,
            "diagnosis": "solutions time out on long inputs",
            "problem_statement": "Make run() retry a failed solve up to three times.",
            "flags": ["touches_entrypoint", "new_file"],
            "evaluated_at": t0 + 3,
        },
    )
    archive.record_scores("edit1", {"train": Score(0.44, 50), "dev": Score(0.40, 20)})
    archive.add_child(
        "edit1",
        "both",
        node_id="both1",
        es_record={"seeds": [21, 22], "sigma": 0.01},
        files={"tools/grep.py": "import re\n"},
        metadata={"iteration": 3, "evaluated_at": t0 + 4},
    )
    archive.record_scores("both1", {"train": Score(0.20, 50), "dev": Score(0.15, 20)})
    archive.add_child(["es1", "edit1"], "crossover", node_id="merge1")
    archive.add_child("es1", "scaffold_edit", node_id="bad1", files={"agent.py": "oops"})
    archive.set_status("bad1", Status.FAILED, "syntax error in agent.py")
    archive.add_child("both1", "es_step", node_id="pending1", es_record={"seeds": [31]})
    return archive


def grow(archive: Archive, count: int, *, seed: int = 0, edits: int = 20) -> list[str]:
    """Add `count` nodes under what is there: `edits` real scaffold commits, the rest ES steps
    in one bulk insert (what an ES population looks like); about a tenth fail."""
    rng = random.Random(seed)
    ids = archive.ids()
    for i in range(edits):
        node_id = f"e{i:04d}"
        archive.add_child(
            rng.choice(ids),
            "scaffold_edit",
            node_id=node_id,
            files={f"tools/t{i}.py": f"x = {i}\n"},
            scores={"train": Score(rng.random(), 50), "dev": Score(rng.random(), 20)},
            status=Status.EVALUATED,
        )
        ids.append(node_id)
    specs = []
    for i in range(count - edits):
        node_id = f"s{i:05d}"
        failed = rng.random() < 0.1
        specs.append(
            NewNode(
                id=node_id,
                parent_ids=(rng.choice(ids[-60:]),),
                es_record={"seeds": [i], "sigma": 0.01},
                status=Status.FAILED if failed else Status.EVALUATED,
                failure_reason="infra_error" if failed else None,
                scores=None if failed else {"train": Score(rng.random(), 50)},
            )
        )
        ids.append(node_id)
    archive.add_many(specs)
    return ids
