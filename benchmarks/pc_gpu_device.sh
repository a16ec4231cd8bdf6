#!/usr/bin/env bash
# The one-command GPU check of issue #21 (docs/gpu.md, "Running it on a lent GPU"), under 8 minutes:
#   1. installs the carried wheels from .whl/ (PyJuice; the device image has torch, Triton, pytest, numpy, scipy);
#   2. prints the card, its driver and clocks;
#   3. runs tests/probcirc/test_kernels.py on CUDA (PROBCIRC_KERNEL_DEVICE=cuda: kernels vs the torch path on the card);
#   4. runs benchmarks/pc_gpu.py at ~2M and ~40M edges, HCLT and PD, with PyJuice on the same card;
#   5. writes $OUT/gpu_report.json (card, versions, kernel tests, figures, the issue's targets met or not)
#      beside the logs and pc_gpu.json. $OUT is the folder the device tool brings back (default: ./out).
# Extra arguments replace the benchmark's default ones (--sizes 2M,40M --budget 190 --deadline 280).
# PYTHON picks the interpreter (default python3, the one holding torch on the device machines).
# Dry run on any machine, no GPU needed: DRY_RUN=1 bash benchmarks/pc_gpu_device.sh
set -o pipefail
py=${PYTHON:-python3}
out=${OUT:-out}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "pc_gpu_device: installing the carried wheels failed" >&2; exit 1; }
    export PYTHONPATH=/tmp/site
else
    echo "pc_gpu_device: no wheels in .whl/: PyJuice will be missing (docs/gpu.md says how to carry it)" >&2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
bench_args=("$@")
[ ${#bench_args[@]} -eq 0 ] && bench_args=(--sizes 2M,40M --budget 190 --deadline 280)

if [ -n "${DRY_RUN:-}" ]; then  # the arguments and the plan only
    exec "$py" benchmarks/pc_gpu.py --dry-run "${bench_args[@]}"
fi

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.used,memory.total --format=csv \
    2>&1 | tee "$out/card.txt"

# Kernel tests on the card; 120 s at most (the first run compiles each kernel variant).
start=$(date +%s)
PROBCIRC_KERNEL_DEVICE=cuda timeout 120 "$py" -m pytest -q -p no:cacheprovider -o addopts= -m "not slow" \
    --junitxml="$out/kernels.xml" tests/probcirc/test_kernels.py 2>&1 | tee "$out/kernels.log"
kernels_rc=$?
kernels_s=$(($(date +%s) - start))

"$py" benchmarks/pc_gpu.py --json "$out/pc_gpu.json" "${bench_args[@]}" 2>&1 | tee "$out/pc_gpu.log"
bench_rc=$?

KERNELS_RC=$kernels_rc KERNELS_S=$kernels_s BENCH_RC=$bench_rc OUT_DIR="$out" "$py" - <<'EOF'
"""Gather the run into one JSON report, with the issue's targets checked."""
import json, math, os, re, xml.etree.ElementTree as ET

out = os.environ["OUT_DIR"]


def read(name, default=None):
    try:
        with open(os.path.join(out, name)) as fh:
            return fh.read()
    except OSError:
        return default


kernels = {"rc": int(os.environ["KERNELS_RC"]), "seconds": int(os.environ["KERNELS_S"])}
try:
    suite = ET.parse(os.path.join(out, "kernels.xml")).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    kernels.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
except (OSError, ET.ParseError, AttributeError):
    kernels["note"] = "no junit report (timed out or did not start): see kernels.log"
log = read("pc_gpu.log", "")
last = re.findall(r"speedup_vs_peer=(\S+) max_rel_err=(\S+)", log)
speedup, err = (float(v) for v in last[-1]) if last else (math.nan, math.nan)
figures = json.loads(read("pc_gpu.json", "null") or "null")
rows = (figures or {}).get("rows", [])
both = [r for r in rows if r.get("ours") and r.get("peer")]
less_memory = [r["ours"]["peak_gib"] < r["peer"]["peak_gib"] for r in both]
sizes = sorted({r["label"] for r in both})
report = {
    "card": (read("card.txt", "") or "").strip().splitlines()[-1:],
    "kernel_tests": kernels,
    "benchmark": {"rc": int(os.environ["BENCH_RC"]), "speedup_vs_peer": speedup, "max_rel_err": err},
    "targets": {
        "max_rel_err <= 1e-5": err <= 1e-5,
        "speedup_vs_peer >= 1.0": speedup >= 1.0,
        "less memory than PyJuice at every size": bool(less_memory) and all(less_memory),
        "sizes compared with PyJuice": sizes,
    },
    "figures": figures,
}


def plain(v):  # strict JSON: NaN/inf become null
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): plain(u) for k, u in v.items()}
    if isinstance(v, list):
        return [plain(u) for u in v]
    return v


with open(os.path.join(out, "gpu_report.json"), "w") as fh:
    json.dump(plain(report), fh, indent=1, allow_nan=False)
print(json.dumps(plain({k: report[k] for k in ("card", "kernel_tests", "benchmark", "targets")}), indent=1))
EOF
# Non-zero when the kernels failed on the card or the benchmark could not run.
[ "$kernels_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
