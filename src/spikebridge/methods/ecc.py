r"""ECC — explicit current control (Wu, Yi & Huang 2022; docs/methods.md §7.3–7.6).

Post-training conversion of an ordinary ReLU network (with biases and BatchNorm) with three
switchable techniques, for the ablation of the paper's Fig. 5:

* **CN** (current normalization, §7.3): :math:`\lambda_n` = the maximum (or ``percentile``) of the
  layer's activations on training images, :math:`W^n \leftarrow \kappa\lambda_{n-1}W^n/\lambda_n`,
  :math:`b^n \leftarrow \kappa b^n/\lambda_n`, threshold :math:`\kappa` (default 100). Off: the
  raw network with threshold 1 in the ANN's units (:math:`\lambda_n = 1`).
* **TRE** (residual elimination, §7.4): every step each neuron receives the extra current
  :math:`\eta\kappa/T` (default :math:`\eta = 0.5`), which over the window acts like a threshold
  lowered by :math:`\eta\kappa` at the last step. Off: :math:`\eta = 0`.
* **CMB** (consistent BatchNorm folding, §7.5): fold with the BatchNorm's own ε. Off: fold
  without ε (Rueckauer 2017).

Unlike the authors' Keras code, which computes each layer's spike *count* in one closed-form
expression (§7.8; several spikes per step allowed, input counts :math:`\lfloor xT\rfloor`), we
simulate the IF neurons step by step like every other method, with direct (analog) input. Where
the input order matters (deeper layers at small T) the two can differ; ours is what a
neuromorphic chip would compute. Because the TRE current depends on T, accuracy at each T comes
from its own run.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..network import SpikingNetwork
from .base import Preparation
from .normalized import DataNormalizedMethod, check_fraction
from .registry import register_method

__all__ = ["ECCMethod"]


@register_method
class ECCMethod(DataNormalizedMethod):
    """ECC conversion with switchable CN / TRE / CMB (see the module docstring)."""

    name = "ecc"
    summary: ClassVar[str] = ("ECC: current normalization (κ=100), residual-elimination current "
                              "ηκ/T (η=0.5), BN folded with ε; each switchable (§7.3-7.6)")

    def __init__(
        self,
        kappa: float = 100.0,
        eta: float = 0.5,
        percentile: float = 100.0,
        cn: bool = True,
        tre: bool = True,
        cmb: bool = True,
    ) -> None:
        eta = check_fraction("ECC's η (residual-elimination current ηκ/T)", eta, 0.0, 1.0,
                             closed_high=False)
        super().__init__(percentile=percentile, kappa=kappa, residual=eta if tre else 0.0,
                         fold_epsilon=cmb)
        self.eta = eta
        self.cn, self.tre, self.cmb = bool(cn), bool(tre), bool(cmb)

    def scales(self, snn: SpikingNetwork, preparation: Preparation) -> dict[str, float]:
        if self.cn:
            return super().scales(snn, preparation)
        return {name: 1.0 for name in snn.neurons()}

    def needs_calibration_data(self) -> bool:
        return self.cn

    def params(self) -> dict[str, Any]:
        return {"kappa": self.kappa, "eta": self.eta, "percentile": self.percentile,
                "cn": self.cn, "tre": self.tre, "cmb": self.cmb}
