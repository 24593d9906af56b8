r"""Optimal initial potential on a normalized ReLU network (Bu et al., AAAI 2022; §2.3, §7.9).

Robust data-based normalization (the 99.9th percentile by default) with soft reset, unit spikes,
and the initial potential :math:`v(0) = \theta/2` that zeroes the expected quantization error
(docs/methods.md §3.5, Theorem 2 with φ = ½).
"""

from __future__ import annotations

from typing import ClassVar

from .normalized import DataNormalizedMethod
from .registry import register_method

__all__ = ["OPIMethod"]


@register_method
class OPIMethod(DataNormalizedMethod):
    """Normalized ReLU network with :math:`v(0) = \\theta/2` (OPI)."""

    name = "opi"
    summary: ClassVar[str] = ("optimal initial potential: robust normalization (p99.9) with "
                              "v(0)=θ/2, soft reset (§7.9)")

    def __init__(self, percentile: float = 99.9, v0: float = 0.5, zeros: bool = False) -> None:
        super().__init__(percentile=percentile, initial_fraction=v0, zeros=zeros)
