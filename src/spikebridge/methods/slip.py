"""SlipReLU conversion (docs/methods.md §5.3): θ = the learned θ, v(0) = δ₂θ, soft reset."""

from __future__ import annotations

from typing import Any, ClassVar

from ..neurons import IFNeuron
from .base import ActivationSite, ConversionMethod, require_threshold
from .registry import register_method

__all__ = ["SlipMethod"]


@register_method
class SlipMethod(ConversionMethod):
    r"""Map every :class:`~spikebridge.activations.SlipReLU` to a soft-reset IF neuron (§5.3).

    :math:`\theta^l` = the activation's learned θ, :math:`v^l(0) = \delta_2\theta^l` (δ₂ is the
    step branch's shift, ½ by default), weighted spikes :math:`x = \theta s`. The weight
    :math:`c` has no SNN counterpart: it only changes what the ANN was trained on (between the
    :math:`T\to\infty` response, a clipped ReLU, and the :math:`T = L` staircase), so the neuron
    is the same whatever :math:`c` is. With :math:`T = L` and constant input the neuron's output
    equals the step branch exactly (§2.5).
    """

    name = "slip"
    source_kinds: ClassVar[tuple[str, ...]] = ("slip",)
    source_hint: ClassVar[str] = "spikebridge train --activation slip:L=4,c=0.5 --out DIR"
    summary: ClassVar[str] = ("SlipReLU: θ = the learned θ, v(0) = δ₂θ (δ₂ = ½ by default), "
                              "soft reset (§5.3)")

    def neuron(self, site: ActivationSite) -> IFNeuron:
        shift = 0.5 if site.shift is None else site.shift
        return IFNeuron(require_threshold(site, self.name), initial_fraction=shift)

    def params(self) -> dict[str, Any]:
        return {}
