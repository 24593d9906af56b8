r"""RMP-SNN threshold scaling, as the ECC paper runs it (Han et al. 2020; docs/methods.md §7.9).

"Residual membrane potential" neurons (soft reset), :math:`v(0) = 0`, on a network normalized by
each layer's maximum activation, with every firing threshold multiplied by a factor
:math:`\alpha` (``scale``; ECC reports RMP-SNN(0.8) and (0.9)) while the weights stay normalized:
neurons fire at :math:`\alpha\lambda_n` and their spikes still count as :math:`\lambda_n`. This
lowers latency and raises the spike count. How RMP derives its unscaled thresholds is not known
exactly; the maximum activation (``percentile=100``) is how ECC's code emulates it.
"""

from __future__ import annotations

from typing import ClassVar

from .normalized import DataNormalizedMethod
from .registry import register_method

__all__ = ["RMPMethod"]


@register_method
class RMPMethod(DataNormalizedMethod):
    """Max-normalized soft-reset network with thresholds × ``scale`` (RMP-SNN)."""

    name = "rmp"
    summary: ClassVar[str] = ("RMP-SNN: max-normalized, soft reset, thresholds × scale "
                              "(default 0.8) (§7.9)")

    def __init__(self, scale: float = 0.8, percentile: float = 100.0, zeros: bool = False) -> None:
        super().__init__(percentile=percentile, threshold_factor=scale, zeros=zeros)
