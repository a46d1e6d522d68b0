#!/usr/bin/env bash
# The main job: prove the sandbox holds, then evolve the embedded default model's agent on MBPP
# (ES steps on the weights and self-edits of the scaffold), draw the lineage, and compare the base
# node with the best one (chosen by dev score) on the held-out split.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${LINEAGE_DEMO_OUT:-out/demo}
RUN=${LINEAGE_DEMO_RUN:-runs/demo-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

echo "== 1. sandbox self-check: every attack must be contained =="
.venv/bin/lineage sandbox selftest

echo "== 2. evolution: lineage run configs/demo.toml (run directory $RUN) =="
.venv/bin/lineage run configs/demo.toml --run-dir "$RUN"

echo "== 3. the lineage: $OUT/lineage.html and $OUT/lineage.png =="
.venv/bin/lineage graph "$RUN" --html "$OUT/lineage.html" --png "$OUT/lineage.png"
.venv/bin/lineage status "$RUN"
echo "continue this run with: .venv/bin/lineage resume $RUN --iterations N"
echo "watch a run live with:  .venv/bin/lineage serve $RUN"
