"""Density estimation from the command line: ``probcirc train | eval | sample``.

:func:`load_data` reads a data set (``.npy``, an HDF5 dataset or a folder of
grey images); :class:`DensityModel` is a trained circuit with what its run
needs to continue (the options, the epochs done, the history) and the image
shape of its data; :mod:`probcirc.density.cli` is the command line.
"""

from .data import Dataset, load_data
from .model import DensityModel

__all__ = ["Dataset", "DensityModel", "load_data"]
