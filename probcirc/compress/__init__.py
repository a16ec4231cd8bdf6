"""Lossless image compression with probabilistic circuits (Liu, Mandt, Van den Broeck, ICLR 2022).

``Codec(circuit)`` codes 8-bit grey and RGB images of any size into ``.pcz``
bytes and back, bit for bit. See ``docs/codec.md`` for the design (exact
deterministic conditionals, integer quantisation, the file format).
"""

from .codec import (
    BLOCK,
    Codec,
    CodecError,
    CodecModel,
    ModelMismatchError,
    PoorFitWarning,
)
from .container import PczFormatError
from .engine import PRECISION, PmfEngine
from .images import ImageModeError
from .program import UnsupportedCircuit
from .train import train_codec

__all__ = [
    "BLOCK",
    "PRECISION",
    "Codec",
    "CodecError",
    "CodecModel",
    "ImageModeError",
    "ModelMismatchError",
    "PczFormatError",
    "PmfEngine",
    "PoorFitWarning",
    "UnsupportedCircuit",
    "train_codec",
]
