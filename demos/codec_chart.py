"""Chart the demo's results: bits per dimension of the PC codec's streams against the PNG files, per test set."""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from probcirc.compress.container import unpack
from probcirc.compress.plot import bits_chart

out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/codec")
rows = {}
for label, folder in (("digits (42 test images)", out), ("coffee", out / "photos"), ("gravel", out / "photos")):
    header, _ = unpack((folder / "test.pcz").read_bytes())
    entries = [e for e in header.entries if label.startswith("digits") or e.name == label]
    pngs = [folder / "test" / f"{e.name}.png" for e in entries]
    dims = sum(np.asarray(Image.open(p)).size for p in pngs)
    rows[label] = {
        "PC codec": 8 * sum(e.stream_len for e in entries) / dims,
        "PNG": 8 * sum(p.stat().st_size for p in pngs) / dims,
    }
bits_chart(rows, out / "codec_bpd.png", "lossless: PC codec streams vs PNG files")
print(
    "  ".join(f"{k}: PC {v['PC codec']:.2f} vs PNG {v['PNG']:.2f} bits/dim" for k, v in rows.items())
    + f"  -> {out / 'codec_bpd.png'}"
)
