"""The six sparse coding models; each file holds only that model's equations."""

from .base import SparseCodingModel
from .bsc import BSC
from .dsc import DSC
from .gsc import GSC
from .mca import MCA
from .mmca import MMCA
from .tsc import TSC

#: model name (as used by the command line) -> class
MODELS = {"bsc": BSC, "tsc": TSC, "dsc": DSC, "mca": MCA, "mmca": MMCA, "gsc": GSC}

__all__ = ["SparseCodingModel", "BSC", "TSC", "DSC", "MCA", "MMCA", "GSC", "MODELS"]
