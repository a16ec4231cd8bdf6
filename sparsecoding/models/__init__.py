"""The six sparse coding models; each file holds only that model's equations."""

from __future__ import annotations

import inspect
from typing import Any

from .base import EXACT_STATES_LIMIT, ExactIntractableError, SparseCodingModel
from .bsc import BSC
from .dsc import DSC
from .gsc import GSC
from .mca import MCA
from .mmca import MMCA
from .tsc import TSC

#: model name (as used by the command line) -> class
MODELS = {"bsc": BSC, "tsc": TSC, "dsc": DSC, "mca": MCA, "mmca": MMCA, "gsc": GSC}


def hyperparameter_defaults(name: str = "bsc") -> dict[str, Any]:
    """The default hyperparameters of model ``name``, read from its ``__init__``: the one source of the defaults.

    Example:
        >>> d = hyperparameter_defaults("bsc")
        >>> d["steps"], d["anneal"], d["random_state"]
        (100, '2:1@0.6', None)
    """
    sig = inspect.signature(MODELS[name].__init__)
    return {k: p.default for k, p in sig.parameters.items() if k != "self" and p.default is not p.empty}


__all__ = [
    "BSC",
    "DSC",
    "EXACT_STATES_LIMIT",
    "GSC",
    "MCA",
    "MMCA",
    "MODELS",
    "TSC",
    "ExactIntractableError",
    "SparseCodingModel",
    "hyperparameter_defaults",
]
