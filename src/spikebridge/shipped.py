"""The pretrained model shipped inside the package (the demo's embedded default).

``fashion_cnn`` with QCFS (L = 4), trained on Fashion-MNIST by ``spikebridge train``; its
``MODEL_CARD.md`` records the exact command, seed and accuracies.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SHIPPED_MODEL_DIR", "SHIPPED_MODEL_NAME"]

SHIPPED_MODEL_NAME = "fashion_cnn_qcfs_l4"
SHIPPED_MODEL_DIR = Path(__file__).resolve().parent / "weights" / SHIPPED_MODEL_NAME
