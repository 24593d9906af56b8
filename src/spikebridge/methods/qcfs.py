"""QCFS conversion (docs/methods.md §3.3): same weights, θ = λ, v(0) = φθ, soft reset."""

from __future__ import annotations

from typing import Any

from ..neurons import IFNeuron
from .base import ActivationSite, ConversionMethod, require_threshold
from .registry import register_method

__all__ = ["QCFSMethod"]


@register_method
class QCFSMethod(ConversionMethod):
    r"""Map every activation to an IF neuron with reset-by-subtraction (docs/methods.md §3.3).

    :math:`\theta^l = \lambda^l`, :math:`v^l(0) = \varphi\theta^l` with the ANN's shift
    :math:`\varphi` (½ for QCFS, §3.1; ½ is also used for clipped ReLUs and ReLUs, the
    choice that zeroes the expected conversion error, §3.5 Theorem 2).
    """

    name = "qcfs"
    summary = "QCFS: θ = the trained clipping value λ, v(0) = θ/2, soft reset (§3.3)"

    def neuron(self, site: ActivationSite) -> IFNeuron:
        shift = 0.5 if site.shift is None else site.shift
        return IFNeuron(require_threshold(site, self.name), initial_fraction=shift)

    def params(self) -> dict[str, Any]:
        return {}
