"""Learning: EM from flows, gradient-based training, Chow-Liu trees."""

from .chow_liu import chow_liu_tree, mutual_information
from .em import em
from .sgd import sgd

__all__ = ["chow_liu_tree", "em", "mutual_information", "sgd"]
