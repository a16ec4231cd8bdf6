#!/usr/bin/env bash
# Lossless codec demo: train on load_digits PNGs, compress, decompress, check bit-exactness; then the
# same on photographs, where train-codec picks the JPEG-LS prediction residuals by itself.
# Run from the repository root with .venv/bin on PATH. Takes about a minute and a half on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=out/codec
rm -rf "$OUT" && mkdir -p "$OUT"
python demos/codec_digits.py "$OUT" 1200 40
probcirc train-codec "$OUT/train" --patch 8x8 --latents 12 --epochs 3 --full-epochs 1 -o "$OUT/model.h5"
probcirc compress "$OUT/test" -m "$OUT/model.h5" -o "$OUT/test.pcz"
probcirc info "$OUT/test.pcz" | tail -3
probcirc decompress "$OUT/test.pcz" -m "$OUT/model.h5" -o "$OUT/restored"
check() {
python - "$1" <<'PY'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
out = Path(sys.argv[1])
orig = sorted((out / "test").glob("*.png"))
bad = [p.name for p in orig if not np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(out / "restored" / p.name)))]
print(f"{len(orig) - len(bad)}/{len(orig)} images restored bit for bit" + (f"; MISMATCH: {bad}" if bad else ""))
sys.exit(1 if bad else 0)
PY
}
check "$OUT"

PHOTOS="$OUT/photos"
python demos/codec_photos.py "$PHOTOS"
probcirc train-codec "$PHOTOS/train" --patch 8x8 --latents 16 --epochs 3 --full-epochs 1 -o "$PHOTOS/model.h5"
probcirc compress "$PHOTOS/test" -m "$PHOTOS/model.h5" -o "$PHOTOS/test.pcz"
probcirc decompress "$PHOTOS/test.pcz" -m "$PHOTOS/model.h5" -o "$PHOTOS/restored"
check "$PHOTOS"
python demos/codec_chart.py "$OUT"
