#!/usr/bin/env bash
# `make bench`: side-by-side comparisons. Slow; never part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
for script in benchmarks/[!_]*.py; do
  printf '\n=== %s ===\n' "$script"
  python "$script"
done
