#!/usr/bin/env bash
# `make bench`: side-by-side comparisons. Slow; never part of `make test`.
# Every script runs even when one fails; exit status 2 means "needs hardware this machine lacks"
# (pc_gpu.py without a GPU) and counts as skipped, any other failure fails the run at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
failed=() skipped=()
for script in benchmarks/[!_]*.py; do
  printf '\n=== %s ===\n' "$script"
  python "$script"
  case $? in
    0) ;;
    2) skipped+=("$script") ;;
    *) failed+=("$script") ;;
  esac
done
printf '\n=== done: %d skipped (%s), %d failed (%s) ===\n' "${#skipped[@]}" "${skipped[*]:-}" "${#failed[@]}" "${failed[*]:-}"
[ ${#failed[@]} -eq 0 ]
