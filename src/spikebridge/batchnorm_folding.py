r"""Fold eval-mode BatchNorm into the preceding convolution or linear layer (docs/methods.md §7.5).

.. math::
    \hat W_{i\cdot} = \frac{\gamma_i}{\sqrt{\sigma_i^2 + \epsilon}} W_{i\cdot},\qquad
    \hat b_i = \frac{\gamma_i}{\sqrt{\sigma_i^2 + \epsilon}}\,(b_i - \mu_i) + \beta_i

with the BatchNorm's own ε (PyTorch: 1e-5) by default. Folding *without* ε (as Rueckauer 2017
did) costs accuracy (ECC, docs/methods.md §7.5); it is available for that ablation.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["FOLDABLE", "fold_batchnorm"]

FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def fold_batchnorm(
    layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm, eps: float | None = None
) -> nn.Module:
    """A copy of ``layer`` (conv or linear) whose output equals ``bn(layer(x))`` in eval mode.

    ``eps`` overrides the BatchNorm's own ε: ``0.0`` folds without ε as Rueckauer et al. 2017 did
    (the ablation of ECC's CMB, docs/methods.md §7.5); ``None`` (default) uses ``bn.eps``.
    """
    if not isinstance(layer, FOLDABLE):
        raise TypeError(f"cannot fold BatchNorm into {type(layer).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    out_features = layer.out_channels if isinstance(layer, nn.modules.conv._ConvNd) else (
        layer.out_features
    )
    if bn.num_features != out_features:
        raise ValueError(
            f"BatchNorm has {bn.num_features} features but the layer before it has {out_features}"
        )
    folded = copy.deepcopy(layer)
    with torch.no_grad():
        weight = layer.weight.detach().to(torch.float64)
        mean = bn.running_mean.detach().to(torch.float64)
        var = bn.running_var.detach().to(torch.float64)
        gamma = bn.weight.detach().to(torch.float64) if bn.affine else torch.ones_like(mean)
        beta = bn.bias.detach().to(torch.float64) if bn.affine else torch.zeros_like(mean)
        bias = (
            layer.bias.detach().to(torch.float64) if layer.bias is not None
            else torch.zeros_like(mean)
        )
        epsilon = bn.eps if eps is None else float(eps)
        if epsilon < 0:
            raise ValueError(f"BatchNorm folding ε must be >= 0, got {epsilon}")
        denominator = torch.sqrt(var + epsilon)
        if bool((denominator == 0).any()):
            raise ValueError(
                "a BatchNorm channel has zero running variance, so folding it without ε divides "
                "by zero; fold with the BatchNorm's own ε (ECC's CMB)"
            )
        scale = gamma / denominator
        shape = (-1,) + (1,) * (weight.dim() - 1)
        new_weight = (weight * scale.view(shape)).to(layer.weight.dtype)
        new_bias = (scale * (bias - mean) + beta).to(layer.weight.dtype)
        folded.weight = nn.Parameter(new_weight)
        folded.bias = nn.Parameter(new_bias)
    return folded
