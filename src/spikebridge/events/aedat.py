"""Reading an AEDAT file of any supported version: dispatch on the header's version line.

================  =====================================  =======================
version           layout                                 reader
================  =====================================  =======================
``#!AER-DAT2.0``  big-endian (address, timestamp) pairs  :func:`.aedat2.read_aedat2`
                  with DVS128 addresses (CIFAR10-DVS)
``#!AER-DAT3.1``  little-endian typed packets            :func:`.aedat31.read_aedat31`
                  (DVS128 Gesture)
================  =====================================  =======================

AEDAT 4.0 (FlatBuffers + LZ4/Zstd compressed, DV software) and 1.0 are refused with a clear
error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spikebridge.dataset_errors import DatasetFormatError

from .aedat2 import Orientation, read_aedat2
from .aedat31 import read_aedat31
from .aedat_header import read_aedat_header

__all__ = ["aedat_version", "read_aedat"]


def aedat_version(path: str | os.PathLike[str]) -> str:
    """The version string of an AEDAT file's header (``"2.0"``, ``"3.1"``, ...)."""
    path = Path(path)
    with open(path, "rb") as f:
        return read_aedat_header(f, path).version


def read_aedat(path: str | os.PathLike[str], *, orientation: Orientation = "jaer") -> np.ndarray:
    """Read the polarity events of an AEDAT 2.0 (DVS128) or 3.1 file.

    Args:
        path: the file.
        orientation: for AEDAT 2.0 only, ``"jaer"`` or ``"spikingjelly"`` (see :mod:`.aedat2`).

    Raises:
        DatasetFormatError: an unsupported version, or a corrupt/truncated file.
    """
    path = Path(path)
    version = aedat_version(path)
    if version.startswith("2."):
        return read_aedat2(path, orientation=orientation)
    if version == "3.1":
        return read_aedat31(path)
    raise DatasetFormatError(
        f"{path}: AEDAT version {version} is not supported (supported: 2.0 DVS128, 3.1)"
    )
