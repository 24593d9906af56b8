"""spikebridge — convert trained ANNs into spiking neural networks that keep their accuracy at
very few time-steps.

The flow: train an ANN with a spiking-friendly activation (QCFS) →
:func:`convert` (BatchNorm folding, activation → IF neuron) → :func:`simulate` for T steps →
:func:`evaluate` (accuracy at every t ≤ T), optionally calibrating offset spikes (``method="cos"``).

>>> snn = spikebridge.convert(model, method="cos", rho=4)          # doctest: +SKIP
>>> result = spikebridge.evaluate(snn, loader, steps=[1, 2, 4], ann=model)  # doctest: +SKIP

The names below are imported on first use (PEP 562), so ``import spikebridge`` — and the
``spikebridge`` command's start, where a Ctrl-C must end in one line — costs no torch import.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

# Step-by-step and layer-wise simulation are bit-identical only if a matrix product's rows do
# not depend on how many rows it has. Intel MKL picks other kernels for 1-3 rows on AVX-512
# CPUs unless its conditional numerical reproducibility is strict; this must be set before
# MKL's first call (docs/reliability.md, "Bit-identical execution"). A value the user set wins.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

from ._version import __version__  # noqa: E402,F401 - after MKL_CBWR, on purpose

_EXPORTS = {
    "QCFS": "activations",
    "ActivationSpec": "activations",
    "ClippedReLU": "activations",
    "UnsupportedLayerError": "convert",
    "convert": "convert",
    "check_convertible": "convert",
    "ConversionProblem": "convert",
    "to_qcfs": "qcfs_fitting",
    "EnergyModel": "energy",
    "OperationCounter": "energy",
    "OperationReport": "energy",
    "ann_operations": "energy",
    "get_method": "methods",
    "list_methods": "methods",
    "SpikingNetwork": "network",
    "IFNeuron": "neurons",
    "Evaluation": "evaluation",
    "evaluate": "evaluation",
    "simulate": "simulate",
    "UsageError": "limits",
    "save_snn": "snn_artefact",
    "export_nir": "nir_export",
    "write_nir": "nir_export",
    "load_nir": "nir_export",
    "load_snn": "snn_artefact",
    "ResourceLimitError": "limits",
}

__all__ = sorted([*_EXPORTS, "__version__"])


class _Package(types.ModuleType):
    """The package's module type: public names are imported on first access. Three of them
    share a name with the submodule defining them (``convert``, ``simulate`` …); importing such
    a submodule must not replace the function with the module, as Python's import system would
    by setting the attribute, so that assignment is skipped and the name stays lazy."""

    def __getattr__(self, name: str) -> object:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module 'spikebridge' has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        super().__setattr__(name, value)
        return value

    def __setattr__(self, name: str, value: object) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return  # a submodule import: keep the public function of that name
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(_EXPORTS))


sys.modules[__name__].__class__ = _Package
