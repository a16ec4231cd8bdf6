"""Lossless image compression with probabilistic circuits (Liu, Mandt, Van den Broeck, ICLR 2022).

``Codec(circuit)`` codes 8-bit grey and RGB images of any size into ``.pcz``
bytes and back, bit for bit. See ``docs/codec.md`` for the design (exact
deterministic conditionals, integer quantisation, the file format).
"""

from . import codec
from .codec import *  # noqa: F403 - the codec module's public names are this package's too
from .engine import PRECISION, PmfEngine
from .program import UnsupportedCircuit
from .train import train_codec

__all__ = [*codec.__all__, "PRECISION", "PmfEngine", "UnsupportedCircuit", "train_codec"]
