"""spikebridge — convert trained ANNs into spiking neural networks that keep their accuracy at
very few time-steps.

The flow: train an ANN with a spiking-friendly activation (QCFS) →
:func:`convert` (BatchNorm folding, activation → IF neuron) → :func:`simulate` for T steps →
:func:`evaluate` (accuracy at every t ≤ T), optionally calibrating offset spikes (``method="cos"``).

>>> snn = spikebridge.convert(model, method="cos", rho=4)          # doctest: +SKIP
>>> result = spikebridge.evaluate(snn, loader, steps=[1, 2, 4], ann=model)  # doctest: +SKIP
"""

from __future__ import annotations

from .activations import QCFS, ActivationSpec, ClippedReLU
from .convert import UnsupportedLayerError, convert
from .energy import EnergyModel, OperationCounter, OperationReport, ann_operations
from .methods import get_method, list_methods
from .network import SpikingNetwork
from .neurons import IFNeuron
from .simulate import Evaluation, evaluate, simulate

__version__ = "0.1.0"

__all__ = [
    "QCFS",
    "ActivationSpec",
    "ClippedReLU",
    "EnergyModel",
    "Evaluation",
    "IFNeuron",
    "OperationCounter",
    "OperationReport",
    "SpikingNetwork",
    "UnsupportedLayerError",
    "__version__",
    "ann_operations",
    "convert",
    "evaluate",
    "get_method",
    "list_methods",
    "simulate",
]
