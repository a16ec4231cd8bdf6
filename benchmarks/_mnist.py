"""MNIST as the COLEP benchmarks use it: one array of flattened images with pixels in [0, 1]."""

from __future__ import annotations

import numpy as np

from probcirc.datasets import load_mnist


def mnist_rows() -> tuple[np.ndarray, np.ndarray]:
    """The 60,000 training images then the 10,000 test images, ``(70000, 784)`` float32, and their labels.

    Rows 0-59,999 are the training file and 60,000-69,999 the test file, so the
    issue's splits are plain ranges. Raises FileNotFoundError without ../shared/data/mnist.
    """
    xtr, ytr = load_mnist("train")
    xte, yte = load_mnist("test")
    X = np.concatenate([xtr, xte]).reshape(-1, 784).astype(np.float32) / 255.0
    return X, np.concatenate([ytr, yte]).astype(int)
