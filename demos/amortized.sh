#!/usr/bin/env bash
# Amortized inference demo: GMM prior + data -> GMM posterior in about a millisecond,
# checked against the exact posterior and two baselines; then sequential filtering.
# Run from the repository root with .venv/bin on PATH:  bash demos/amortized.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=out/amortized
mkdir -p "$out"
models=amortized/models

lg=$models/linear_gaussian_d2_k4.h5
if [[ ! -f $lg ]]; then
    echo "no shipped linear_gaussian model; training a small one (about a minute)"
    lg=$out/linear_gaussian_d2_k4.h5
    amortized train --task linear_gaussian --dim 2 --components 4 --steps 400 \
        --batch-size 256 --d-model 48 --layers 2 --threads 1 -o "$lg" --force
fi
echo "=== linear_gaussian (D=2, K=4): transformer vs exact, GMM-VI and importance sampling ==="
amortized evaluate "$lg" --threads 1 --problems 50 --vi-steps 200 --plot "$out/linear_gaussian_contours.png" --force

lti=$models/lti_filter_k4.h5
if [[ ! -f $lti ]]; then
    echo "no shipped lti_filter model; training a small one"
    lti=$out/lti_filter_k4.h5
    amortized train --task lti_filter --components 4 --steps 300 --batch-size 256 \
        --d-model 32 --layers 2 --threads 1 -o "$lti" --force
fi
echo
echo "=== lti_filter: rolled forward 30 steps vs the exact Gaussian-sum Kalman filter ==="
amortized evaluate "$lti" --threads 1 --problems 50 --vi-steps 200 --sequences 50 --seq-steps 30 \
    --plot "$out/lti_filter_step.png" --force
echo
echo "pictures in $out/"
