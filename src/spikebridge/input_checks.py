"""Checks on the images handed to a converted network (docs/reliability.md, "Inputs").

A converted network is only meaningful on inputs shaped like the ANN's training images, in the
network's floating-point dtype, and finite. Without these checks a wrong image size surfaces as a
raw matrix-shape error deep inside the graph, and — worse — a NaN image never makes an IF neuron
fire (``NaN >= θ`` is false), so the SNN returns finite, confident logits for it where the ANN
returns NaN. :func:`check_input` turns all three into one clear error before any work is done.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "NONFINITE_POLICIES",
    "InputError",
    "NonFiniteInputError",
    "check_input",
    "check_nonfinite_policy",
    "infer_input_channels",
]

NONFINITE_POLICIES = ("error", "propagate")
"""What to do with samples holding NaN or ±inf: raise (default), or give them NaN outputs."""


class InputError(ValueError):
    """Images that do not fit the network: wrong rank, shape or dtype."""


class NonFiniteInputError(InputError):
    """Input samples contain NaN or ±inf."""


def check_nonfinite_policy(policy: str) -> str:
    if policy not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {policy!r}")
    return policy


def infer_input_channels(model: nn.Module) -> int | None:
    """``in_channels`` of the first ``Conv*d`` of ``model`` in registration order, if any."""
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return int(module.in_channels)
    return None


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[B, " + ", ".join(str(s) for s in shape) + "]"


def check_input(
    x: object,
    *,
    input_shape: tuple[int, ...] | None,
    channels: int | None,
    dtype: torch.dtype,
    nonfinite: str = "error",
) -> torch.Tensor | None:
    """Validate a batch ``x`` for a network expecting ``[B, *input_shape]`` of ``dtype``.

    ``input_shape`` is the per-sample shape (e.g. ``(1, 28, 28)``) when known; otherwise only the
    channel count (dim 1) is checked, when known. Returns ``None`` when every sample is finite,
    else (with ``nonfinite="propagate"``) the boolean mask ``[B]`` of samples holding NaN/±inf.

    Raises:
        InputError: ``x`` is not a tensor, has no batch dimension, has the wrong per-sample
            shape or channel count, or is not of ``dtype`` (e.g. uint8 images not yet scaled).
        NonFiniteInputError: a sample holds NaN or ±inf and ``nonfinite="error"``.
    """
    check_nonfinite_policy(nonfinite)
    if not isinstance(x, torch.Tensor):
        raise InputError(f"the input must be a torch.Tensor [B, C, H, W], got {type(x).__name__}")
    expected = _shape_text(input_shape) if input_shape is not None else "[B, C, H, W]"
    if x.dim() < 2:
        raise InputError(f"the input has shape {list(x.shape)}; the network expects {expected} "
                         "(a batch dimension first)")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise InputError(f"the input has shape {list(x.shape)}; the network expects {expected} "
                         "(the shape of the images it was trained on)")
    if input_shape is None and channels is not None and (x.dim() < 3 or x.shape[1] != channels):
        raise InputError(f"the input has shape {list(x.shape)}; the network's first layer "
                         f"expects {channels} channel(s) in dimension 1")
    if x.dtype != dtype:
        hint = (" (integer images: scale them to [0, 1] and normalize them as in training, e.g. "
                "spikebridge.data.transforms.to_float + normalize)"
                if not x.dtype.is_floating_point else "")
        raise InputError(f"the input is {x.dtype}; the network computes in {dtype}{hint}")
    bad = ~torch.isfinite(x).flatten(1).all(dim=1)
    if not bool(bad.any()):
        return None
    if nonfinite == "error":
        indices = bad.nonzero().flatten().tolist()
        listed = ", ".join(map(str, indices[:5])) + (", ..." if len(indices) > 5 else "")
        raise NonFiniteInputError(
            f"{len(indices)} of {x.shape[0]} input sample(s) contain NaN or inf (batch "
            f"index {listed}); an SNN would turn them into confident answers. Clean the data, "
            "or pass nonfinite='propagate' (CLI: --allow-nonfinite) to give them NaN outputs"
        )
    return bad
