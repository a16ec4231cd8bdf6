#!/usr/bin/env bash
# One prepared call of benchmarks/pc_gpu.py on a lent GPU machine (docs/gpu.md, "Running it on a lent GPU").
# Installs carried wheels from .whl/ (PyJuice), prints the card's state, and keeps the log and the JSON
# figures under $OUT (the device tool brings that folder back). Extra arguments go to pc_gpu.py;
# PYTHON picks the interpreter (default python3, the one holding torch on the device machines).
set -o pipefail
if compgen -G ".whl/*.whl" >/dev/null; then
    "${PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.used,memory.total --format=csv 2>/dev/null
out=${OUT:-out}
mkdir -p "$out"
tag=$(date +%H%M%S)
"${PYTHON:-python3}" benchmarks/pc_gpu.py --json "$out/pc_gpu_$tag.json" "$@" 2>&1 | tee "$out/pc_gpu_$tag.log"
