"""Write sklearn's load_digits as 8-bit PNGs (values 0..16 scaled to 0..240) for the codec demo."""

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/codec")
n_train, n_test = int(sys.argv[2]) if len(sys.argv) > 2 else 1200, int(sys.argv[3]) if len(sys.argv) > 3 else 40
digits = (load_digits().images * 15).astype(np.uint8)  # 8x8, 0..240
for name, imgs in (("train", digits[:n_train]), ("test", digits[n_train : n_train + n_test])):
    (out / name).mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(imgs):
        Image.fromarray(img).save(out / name / f"digit{i:04d}.png")
# one odd-sized image (two digits side by side, cropped) and one RGB image, to show tiling and colour
wide = np.concatenate([digits[-1], digits[-2]], axis=1)[:7, :13]
Image.fromarray(wide).save(out / "test" / "wide_odd.png")
rgb = np.stack([digits[-3], digits[-4], digits[-5]], -1)
Image.fromarray(rgb, "RGB").save(out / "test" / "colour.png")
print(f"wrote {n_train} training and {n_test + 2} test PNGs under {out}/")
