#!/usr/bin/env bash
# `make demo`: every main job of the library, end to end, on data that ships
# with the project or its dependencies. Outputs go to out/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out
step() { printf '\n=== %s ===\n' "$1"; }

step "Gaussian mixture: fit with missing values, exact conditionals"
python demos/gmm.py

step "Probabilistic circuit: HCLT on 8x8 digits, samples and inpainting"
python demos/pc_digits.py

step "Sparse coding: BSC on the bars test with mpirun, HDF5 results, dictionary plot"
bash demos/sparsecoding.sh

step "COLEP: knowledge-corrected conformal sets, attack, certification"
python demos/colep.py

step "Amortized inference: Distribution Transformer posterior vs exact, VI and importance sampling"
bash demos/amortized.sh

step "Lossless image codec: train on digits, compress, decompress, verify bit for bit"
bash demos/codec.sh

step "Inpainting: a circuit alone, RePaint, and RePaint steered by the circuit (shipped MNIST DDPM)"
python demos/inpaint.py out/inpaint
