"""Write some of scikit-image's sample photographs as PNGs for the codec demo: 8 to train on, 2 to code."""

import sys
from pathlib import Path

import skimage.data
from PIL import Image

out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/codec/photos")
sets = {"train": ["camera", "moon", "coins", "text", "page", "clock", "grass", "brick"], "test": ["coffee", "gravel"]}
for part, names in sets.items():
    (out / part).mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(getattr(skimage.data, name)()).save(out / part / f"{name}.png")
print(f"wrote {len(sets['train'])} training and {len(sets['test'])} test photographs under {out}/")
