r"""Data-based weight normalization of Rueckauer et al. 2017 ("2017-SNN", docs/methods.md §7.9).

Soft-reset IF neurons with unit spikes, threshold 1, :math:`v(0) = 0`; per layer
:math:`\lambda_n` = the :math:`p`-th percentile of the layer's ANN activations on training images,
:math:`W^n \leftarrow W^n\lambda_{n-1}/\lambda_n`, :math:`b^n \leftarrow b^n/\lambda_n`. ``maxnorm``
uses :math:`p = 100` (the maximum), ``robustnorm`` the "robust" :math:`p = 99.9`. BatchNorm is
folded without ε by default, as in the 2017 paper (``fold_epsilon=True`` folds with it, §7.5).
"""

from __future__ import annotations

from typing import ClassVar

from .normalized import DataNormalizedMethod
from .registry import register_method

__all__ = ["MaxNormMethod", "RobustNormMethod"]


@register_method
class MaxNormMethod(DataNormalizedMethod):
    """Rueckauer 2017 weight normalization by the maximum activation (p = 100)."""

    name = "maxnorm"
    summary: ClassVar[str] = ("Rueckauer 2017: weights normalized by each layer's maximum ANN "
                              "activation; soft reset, v(0)=0 (§7.9)")

    def __init__(self, percentile: float = 100.0, fold_epsilon: bool = False,
                 zeros: bool = False) -> None:
        super().__init__(percentile=percentile, fold_epsilon=fold_epsilon, zeros=zeros)


@register_method
class RobustNormMethod(DataNormalizedMethod):
    """Rueckauer 2017 "robust" normalization by the 99.9th percentile activation."""

    name = "robustnorm"
    summary: ClassVar[str] = ("Rueckauer 2017 robust normalization: the 99.9th percentile "
                              "activation per layer; soft reset, v(0)=0 (§7.9)")

    def __init__(self, percentile: float = 99.9, fold_epsilon: bool = False,
                 zeros: bool = False) -> None:
        super().__init__(percentile=percentile, fold_epsilon=fold_epsilon, zeros=zeros)
