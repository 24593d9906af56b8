r"""Symmetric-threshold ReLU and its baselines (Han et al., MIR 2023; docs/methods.md §6).

**Reconstruction.** Only the paper's abstract was available; its formulas, neuron model and
settings were not recovered (§6.2 is our best-supported reading, every formula an assumption).
Three methods, one per activation the abstract compares:

* ``"strelu"`` — :class:`~spikebridge.activations.SymmetricThresholdReLU`,
  :math:`\mathrm{clip}(z, -\theta, \theta)`, becomes a *signed* IF neuron with thresholds
  :math:`\pm\theta`, soft reset and weighted spikes :math:`x = \theta s`, :math:`s\in\{-1,0,1\}`.
  Summing the updates gives the rate identity of §2.4 unchanged,
  :math:`\phi(T) = \bar z - (v(T) - v(0))/T`, with :math:`\phi\in[-\theta, \theta]`; for
  constant input and :math:`v(0) = 0` the neuron outputs
  :math:`\theta\,\mathrm{sign}(z)\,\mathrm{clip}(\lfloor T|z|/\theta\rfloor, 0, T)/T`: the
  quantization error always points towards 0, so positive and negative errors cancel over a
  sign-symmetric input distribution (the abstract's argument). ``v0`` (a fraction of θ, default
  0) is a parameter. 0 is the symmetric choice and the default; any other start treats the two
  signs unequally (``v0 = ½`` rounds positive inputs to the nearest level but biases negative
  ones towards 0 by a whole level). Measured on fashion_cnn trained one epoch on 20 000
  Fashion-MNIST images (1000 test images): ``v0 ∈ {-½, 0, ¼, ½}`` are within one point of each
  other at T ≥ 8 (≈72 % at T = 8, ≈77 % at T = 32, ANN 77.1 %); ``v0 = ½`` was better at
  T = 2–4 (49.9 % vs 41.6 % at T = 4), where the network is far from the ANN anyway. The
  evidence (one model) did not justify giving up the symmetric default.
* ``"leaky-threshold"`` — :class:`~spikebridge.activations.AsymmetricLeakyReLU`
  (:math:`\min(z,\theta)` above 0, :math:`\max(\alpha z, -\theta_-)` below) becomes a signed
  neuron with positive threshold θ (spike value θ) and negative threshold :math:`\theta_-/\alpha`
  with spike value :math:`\theta_-`. For constant :math:`z < 0` it fires
  :math:`N_- = \mathrm{clip}(\lfloor T\alpha|z|/\theta_- \rfloor, 0, T)` negative spikes (with
  :math:`v(0)=0`), so its output :math:`-\theta_- N_-/T` is within :math:`\theta_-/T` of
  :math:`\max(\alpha z, -\theta_-)`.
* ``"threshold-relu"`` — the clipped ReLU ("threshold ReLU") with plain conversion: unsigned IF,
  θ = the trained threshold, :math:`v(0) = 0` (no QCFS-style half-threshold start).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..neurons import IFNeuron
from .base import ActivationSite, ConversionMethod, WrongSourceModelError, require_threshold
from .registry import register_method

__all__ = ["LeakyThresholdMethod", "StReLUMethod", "ThresholdReLUMethod"]


def _check_v0(v0: float) -> float:
    v0 = float(v0)
    if not -1.0 < v0 < 1.0:
        raise ValueError(f"v0 is v(0)/θ and must lie in (-1, 1), got {v0}")
    return v0


@register_method
class StReLUMethod(ConversionMethod):
    r"""stReLU → signed IF neuron, thresholds :math:`\pm\theta`, :math:`v(0) = v_0\theta`.

    A reconstruction (§6.2): the paper's formulas were not recovered.
    """

    name = "strelu"
    source_kinds: ClassVar[tuple[str, ...]] = ("strelu",)
    source_hint: ClassVar[str] = "spikebridge train --activation strelu:theta=2 --out DIR"
    summary: ClassVar[str] = ("stReLU (RECONSTRUCTED, paper formulas not recovered): signed IF "
                              "neuron, thresholds ±θ, spikes ±θ, v(0) = v0·θ (default 0), soft "
                              "reset (§6.2)")

    def __init__(self, v0: float = 0.0) -> None:
        self.v0 = _check_v0(v0)

    def neuron(self, site: ActivationSite) -> IFNeuron:
        theta = require_threshold(site, self.name)
        return IFNeuron(theta, initial_fraction=self.v0, negative_threshold=theta)

    def params(self) -> dict[str, Any]:
        return {"v0": self.v0}


@register_method
class LeakyThresholdMethod(ConversionMethod):
    r"""Asymmetric-threshold LeakyReLU → signed IF neuron: :math:`+\theta` (spike θ),
    :math:`-\theta_-/\alpha` (spike :math:`-\theta_-`), :math:`v(0) = v_0\theta`.

    The stReLU paper's baseline, reconstructed (§6.2).
    """

    name = "leaky-threshold"
    source_kinds: ClassVar[tuple[str, ...]] = ("leaky_threshold",)
    source_hint: ClassVar[str] = ("spikebridge train --activation "
                                  "leaky_threshold:theta=2,alpha=0.1,neg_theta=0.5 --out DIR")
    summary: ClassVar[str] = ("asymmetric-threshold LeakyReLU baseline of stReLU "
                              "(RECONSTRUCTED): signed IF, +θ, -θ₋/α with spikes -θ₋, soft "
                              "reset (§6.2)")

    def __init__(self, v0: float = 0.0) -> None:
        self.v0 = _check_v0(v0)

    def neuron(self, site: ActivationSite) -> IFNeuron:
        theta = require_threshold(site, self.name)
        module = site.module
        alpha, neg_theta = getattr(module, "alpha", None), getattr(module, "neg_theta", None)
        if alpha is None or neg_theta is None:
            raise WrongSourceModelError(
                f"activation {site.name!r} has no slope alpha / lower bound neg_theta; method "
                f"{self.name!r} needs an AsymmetricLeakyReLU ({self.source_hint})"
            )
        return IFNeuron(theta, initial_fraction=self.v0, negative_threshold=neg_theta / alpha,
                        negative_amplitude=neg_theta)

    def params(self) -> dict[str, Any]:
        return {"v0": self.v0}


@register_method
class ThresholdReLUMethod(ConversionMethod):
    """Threshold (clipped) ReLU → unsigned soft-reset IF neuron, θ, ``v(0) = 0`` (§6.2 baseline).

    The plain threshold-ReLU conversion the stReLU paper compares with, without the QCFS shift
    (``"qcfs"`` converts the same models with ``v(0) = θ/2``).
    """

    name = "threshold-relu"
    source_kinds: ClassVar[tuple[str, ...]] = ("clipped_relu",)
    source_hint: ClassVar[str] = "spikebridge train --activation clipped_relu:theta=2 --out DIR"
    summary: ClassVar[str] = ("threshold ReLU (clipped ReLU) baseline of stReLU: θ = the trained "
                              "threshold, v(0) = 0, soft reset (§6.2)")

    def neuron(self, site: ActivationSite) -> IFNeuron:
        return IFNeuron(require_threshold(site, self.name), initial_fraction=0.0)

    def params(self) -> dict[str, Any]:
        return {}
