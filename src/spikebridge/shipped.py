"""The pretrained model shipped inside the package (the demo's embedded default).

``fashion_cnn`` with QCFS (L = 4), trained on Fashion-MNIST by ``spikebridge train``; its
``MODEL_CARD.md`` records the exact command, seed and accuracies, and its ``manifest.json`` the
SHA-256 of ``model.safetensors`` and ``config.json`` (verified on every load).

Everything under :data:`SHIPPED_WEIGHTS_ROOT` is read-only to spikebridge: checkpoint writers and
result writers refuse to write there (:func:`is_shipped_path`).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SHIPPED_MODEL_DIR", "SHIPPED_MODEL_NAME", "SHIPPED_WEIGHTS_ROOT", "is_shipped_path"]

SHIPPED_MODEL_NAME = "fashion_cnn_qcfs_l4"
SHIPPED_WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"
SHIPPED_MODEL_DIR = SHIPPED_WEIGHTS_ROOT / SHIPPED_MODEL_NAME


def is_shipped_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (existing or not, symlinks resolved) lies in the shipped weights tree."""
    resolved = Path(os.path.realpath(path))
    return resolved == SHIPPED_WEIGHTS_ROOT or SHIPPED_WEIGHTS_ROOT in resolved.parents
