r"""b-bit signed weight quantization for deployment (docs/methods.md §7.6).

After a method's conversion (and normalization), every conv/linear weight tensor is mapped to
signed integers on a per-layer grid:

.. math::
    \Delta_l = \frac{\max|W^l|}{2^{b-1} - 1},\qquad
    W^l_{\mathrm{int}} = \mathrm{round}(W^l / \Delta_l) \in [-(2^{b-1}-1),\ 2^{b-1}-1],\qquad
    W^l \leftarrow \Delta_l\, W^l_{\mathrm{int}}

The network we simulate keeps the dequantized weights :math:`\Delta_l W^l_{\mathrm{int}}`; it is
the integer-weight network with every downstream threshold and bias divided by :math:`\Delta_l`
(the consistent threshold scaling of ECC §4.4), since an IF neuron's spikes do not change when its
input current, potential and threshold are all scaled by the same positive factor. Biases and
thresholds stay in full precision (an accumulator register); ECC's code additionally truncates
them to integers.

Two differences from ECC's code, both deliberate: the grid has :math:`2^{b-1}-1` positive levels so
the largest weight fits in ``b`` signed bits (ECC's :math:`2^{b-1}` overflows by one level), and the
default rounding is to nearest (``rounding="trunc"`` truncates toward zero on our grid, which
doubles the worst-case error). ``rounding="ecc"`` is ECC's code exactly: :math:`\Delta_l =
\max|W^l| / 2^{b-1}`, truncation, no clamp, so the largest weight takes the level
:math:`2^{b-1}`, which needs one bit more than ``b``.
"""

from __future__ import annotations

import copy

import torch
from torch import fx

from .batchnorm_folding import FOLDABLE

__all__ = ["ROUNDING", "check_bits", "quantize_tensor", "quantize_weights"]

ROUNDING = ("nearest", "trunc", "ecc")


def check_bits(bits: int) -> int:
    """Validate a weight bit width: an integer in [2, 16] (sign bit included)."""
    if isinstance(bits, bool) or int(bits) != bits or not 2 <= int(bits) <= 16:
        raise ValueError(
            f"weight bits must be an integer from 2 to 16 (sign included), got {bits!r}"
        )
    return int(bits)


def quantize_tensor(
    weight: torch.Tensor, bits: int, rounding: str = "nearest"
) -> tuple[torch.Tensor, float]:
    """``(Δ · W_int, Δ)`` for one weight tensor (see the module docstring)."""
    bits = check_bits(bits)
    if rounding not in ROUNDING:
        raise ValueError(f"rounding must be one of {ROUNDING}, got {rounding!r}")
    # ECC's own grid: 2^(b-1) levels, truncated, unclamped — its largest weight lands on
    # 2^(b-1), one level beyond b signed bits (reproduced as ECC's code has it)
    levels = 2 ** (bits - 1) if rounding == "ecc" else 2 ** (bits - 1) - 1
    w_max = float(weight.detach().abs().max())
    if w_max == 0.0:
        return weight.detach().clone(), 0.0
    step = w_max / levels
    # multiply before dividing: |w| = w_max then gives exactly `levels` (float32 weights times a
    # 15-bit integer are exact in float64), so truncation cannot lose the top level
    scaled = weight.detach().double() * levels / w_max
    integers = torch.round(scaled) if rounding == "nearest" else torch.trunc(scaled)
    if rounding != "ecc":
        integers = integers.clamp(-levels, levels)
    return (integers * step).to(weight.dtype), step


def quantize_weights(
    gm: fx.GraphModule, bits: int, rounding: str = "nearest"
) -> fx.GraphModule:
    """A copy of ``gm`` whose conv/linear weights are quantized to ``bits`` signed bits."""
    bits = check_bits(bits)
    gm = copy.deepcopy(gm)
    for _, module in gm.named_modules():
        if isinstance(module, FOLDABLE):
            with torch.no_grad():
                quantized, _ = quantize_tensor(module.weight, bits, rounding)
                module.weight.copy_(quantized)
    return gm
