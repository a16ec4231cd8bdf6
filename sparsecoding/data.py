"""Data for sparse coding: the bars test and whitened natural-image patches.

Image patches come from scikit-image's bundled images (``skimage.data``, no
download), which is part of the ``bench`` extra and imported only when needed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["bars_dictionary", "bars_data", "image_patches", "greedy_match", "MODELS_TRUTH"]


def bars_dictionary(size: int = 5, amplitude: float = 10.0) -> np.ndarray:
    """The ``2 * size`` bars on a ``size x size`` grid as a (size², 2·size) dictionary.

    Columns ``0..size-1`` are horizontal bars (rows of the grid), the rest vertical.

    Example:
        >>> bars_dictionary(3, 1.0)[:, 0].reshape(3, 3).tolist()
        [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    W = np.zeros((size, size, 2 * size))
    for i in range(size):
        W[i, :, i] = 1.0
        W[:, i, size + i] = 1.0
    return amplitude * W.reshape(size * size, 2 * size)


#: how each model's ground truth on the bars test is built from the bars
MODELS_TRUTH = ("bsc", "tsc", "dsc", "mca", "mmca", "gsc")


def bars_truth(model: str, size: int = 5, pi: float = 0.2, sigma: float = 2.0, amplitude: float = 10.0,
               signed: bool = False) -> dict:
    """Ground-truth parameters of ``model`` on the bars test.

    BSC, TSC, MCA, MMCA: ``W = amplitude * bars`` (MMCA with ``signed``: every
    other bar scaled by -0.7, so that magnitudes differ where bars cross);
    DSC: values (0, 1, 2) with prior (1 - pi, pi/2, pi/2); GSC: slab ``mu = 1``, ``Psi = 0.1 I``.
    """
    W = bars_dictionary(size, amplitude)
    H = W.shape[1]
    params = {"W": W, "pi": np.array(pi), "sigma": np.array(sigma)}
    extra = {}
    if model == "mmca" and signed:
        params["W"] = W * np.where(np.arange(H) % 2 == 0, 1.0, -0.7)
    if model == "dsc":
        params["prior"] = np.array([1.0 - pi, pi / 2, pi / 2])
        extra["values"] = (0.0, 1.0, 2.0)
    elif model == "gsc":
        params["mu"] = np.ones(H)
        params["Psi"] = 0.1 * np.eye(H)
    elif model not in MODELS_TRUTH:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS_TRUTH)}")
    return {"params": params, "extra": extra}


def bars_data(N: int = 1000, size: int = 5, pi: float = 0.2, sigma: float = 2.0, amplitude: float = 10.0,
              model: str = "bsc", seed: int = 0, signed: bool = False) -> dict:
    """Draw the bars test from ``model``'s generative model.

    Returns a dict with ``Y`` (N, size²), ``S`` (N, 2·size) and the true
    parameters (``W``, ``pi``, ``sigma``, ...).

    Example:
        >>> d = bars_data(N=10, seed=1)
        >>> d["Y"].shape, d["W"].shape
        ((10, 25), (25, 10))
    """
    from .models import MODELS

    if N < 1:
        raise ValueError(f"N must be at least 1, got {N}")
    if not 0 < pi < 1:
        raise ValueError(f"pi must lie in (0, 1), got {pi}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    truth = bars_truth(model, size, pi, sigma, amplitude, signed)
    params = truth["params"]
    m = MODELS[model](H=2 * size, **truth["extra"], **params)
    S, Y = m.generate(m.params, N, np.random.default_rng(seed))
    return {"Y": Y, "S": S, **m.params, **{k: np.asarray(v) for k, v in truth["extra"].items()}}


_IMAGES = ("camera", "astronaut", "coffee", "chelsea", "coins", "moon", "page", "text", "grass", "gravel", "brick")


def image_patches(N: int = 50000, size: int = 12, seed: int = 0, images: Sequence[str] | None = None,
                  whiten: bool = True, eps: float = 1e-2) -> np.ndarray:
    """Random ``size x size`` patches of scikit-image's bundled grey-scale images, DC removed and ZCA-whitened.

    Returns an (N, size²) float64 array with unit mean variance per pixel.

    Raises:
        ImportError: if scikit-image is not installed (``pip install probmod[bench]``).
    """
    try:
        import skimage.data
        from skimage.color import rgb2gray
    except ImportError:
        raise ImportError("image patches need scikit-image; install it with `pip install probmod[bench]`") from None
    rng = np.random.default_rng(seed)
    imgs = []
    for name in images or _IMAGES:
        loader = getattr(skimage.data, name, None)
        if loader is None:
            continue
        try:
            img = np.asarray(loader(), dtype=np.float64)
        except Exception:  # an image missing from this skimage build: skip it
            continue
        if img.ndim == 3:
            img = rgb2gray(img[..., :3])
        img = img / (img.max() or 1.0)
        if min(img.shape) > size:
            imgs.append(img)
    if not imgs:
        raise ValueError("no usable scikit-image image found for patches")
    which = rng.integers(len(imgs), size=N)
    P = np.empty((N, size * size))
    for i, img in enumerate(imgs):  # loop over images, not patches
        sel = np.nonzero(which == i)[0]
        r = rng.integers(img.shape[0] - size + 1, size=len(sel))
        c = rng.integers(img.shape[1] - size + 1, size=len(sel))
        ii = r[:, None, None] + np.arange(size)[None, :, None]
        jj = c[:, None, None] + np.arange(size)[None, None, :]
        P[sel] = img[ii, jj].reshape(len(sel), -1)
    P -= P.mean(axis=1, keepdims=True)
    if whiten:
        C = P.T @ P / N
        w, V = np.linalg.eigh(C)
        P = P @ (V / np.sqrt(w + eps * w.max())) @ V.T
    return P / np.sqrt(np.mean(P.var(axis=0)))


def greedy_match(W: np.ndarray, W_true: np.ndarray, up_to_sign: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Greedily pair learned columns with true ones by smallest mean absolute error.

    Returns ``(match, mae)``: ``match[j]`` is the learned column paired with
    true column ``j`` and ``mae[j]`` its mean absolute error (after flipping the
    sign of the learned column when ``up_to_sign`` and that helps).

    Example:
        >>> import numpy as np
        >>> T = np.eye(3)
        >>> greedy_match(T[:, [2, 0, 1]], T)[0].tolist()
        [1, 2, 0]
    """
    W, W_true = np.asarray(W, dtype=np.float64), np.asarray(W_true, dtype=np.float64)
    if W.shape[0] != W_true.shape[0]:
        raise ValueError(f"W has {W.shape[0]} rows but W_true has {W_true.shape[0]}")
    cost = np.abs(W[:, :, None] - W_true[:, None, :]).mean(axis=0)  # (H, H_true)
    if up_to_sign:
        cost = np.minimum(cost, np.abs(-W[:, :, None] - W_true[:, None, :]).mean(axis=0))
    match = np.full(W_true.shape[1], -1)
    mae = np.full(W_true.shape[1], np.inf)
    cost = cost.copy()
    for _ in range(min(W.shape[1], W_true.shape[1])):
        i, j = np.unravel_index(np.argmin(cost), cost.shape)
        match[j], mae[j] = i, cost[i, j]
        cost[i, :] = np.inf
        cost[:, j] = np.inf
    return match, mae
