"""Structure templates: HCLT, Poon-Domingos and RAT-SPN."""

from .hclt import HCLT
from .pd import PD
from .ratspn import RAT_SPN

__all__ = ["HCLT", "PD", "RAT_SPN"]
