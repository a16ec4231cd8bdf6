"""Files written by earlier .pcz versions still decode bit-exactly (issue #17).

``data/v2.pcz`` was written by the version-2 code (commit 700a310) with the tiny model
``data/v2_model.h5`` (HCLT, 2 latents, 2x2 patches, one EM epoch on the first 3 MNIST
test digits): those 3 digits (array elements named seven, two, one), a 5x7 noise image
and a 6x5 RGB ramp, the last two stored raw. ``data/v2_images.npz`` holds the originals.
"""

from pathlib import Path

import numpy as np

import probcirc
from probcirc.compress import Codec, container

DATA = Path(__file__).parent / "data"


def test_version_2_file_decodes_bit_exactly():
    codec = Codec(probcirc.io.load(DATA / "v2_model.h5"))
    blob = (DATA / "v2.pcz").read_bytes()
    header, _ = container.unpack(blob)
    assert header.version == 2
    assert [e.name for e in header.entries] == ["seven", "two", "one", "noise", "rgb"]
    assert [e.coding for e in header.entries] == [container.MODEL] * 3 + [container.RAW] * 2
    with np.load(DATA / "v2_images.npz") as f:
        originals = [f[f"arr_{i}"] for i in range(5)]
    decoded = codec.decode(blob)
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(originals, decoded))
    assert np.array_equal(codec.decode(blob, 1)[0], originals[1])  # one image alone, checked by its own CRC
