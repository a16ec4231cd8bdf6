"""Learning: EM from flows, gradient-based training, Chow-Liu trees, structure learning (prune and grow)."""

from .chow_liu import chow_liu_tree, mutual_information
from .em import edge_flows, em
from .prune import check_structure, grow, prune, prune_grow
from .sgd import sgd

__all__ = [
    "check_structure",
    "chow_liu_tree",
    "edge_flows",
    "em",
    "grow",
    "mutual_information",
    "prune",
    "prune_grow",
    "sgd",
]
