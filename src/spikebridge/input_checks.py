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
    "DataMismatchError",
    "InputError",
    "NonFiniteInputError",
    "check_input",
    "check_nonfinite_policy",
    "check_test_set",
    "infer_input_channels",
    "nonfinite_error",
]

NONFINITE_POLICIES = ("error", "propagate")
"""What to do with samples holding NaN or ±inf: raise (default), or give them NaN outputs."""


class InputError(ValueError):
    """Images that do not fit the network: wrong rank, shape or dtype."""


class NonFiniteInputError(InputError):
    """Input samples contain NaN or ±inf."""


class DataMismatchError(InputError):
    """A test set that is not the data a checkpoint was made for."""


def check_test_set(test: object, config: dict, source: object, *, ignore: bool = False) -> None:
    """Refuse a test set that is not the data the checkpoint (``config``, from ``source``) was
    made for: another image shape (C, H, W) or class count always; other images or labels
    under the same dataset name — the SHA-256 ``fingerprint()`` differs from the config's
    ``test_fingerprint``, recorded at training time — unless ``ignore``. Streamed datasets
    have no fingerprint; checkpoints written before fingerprints skip that check.

    Raises:
        DataMismatchError: naming both shapes / class counts, or the fingerprint mismatch.
    """
    expected = (config["in_channels"], *config.get("input_size", test.input_size))
    found = (test.in_channels, *test.input_size)
    if tuple(expected) != found or test.num_classes != config["num_classes"]:
        raise DataMismatchError(
            f"{source} was trained on {config['dataset']} images of shape "
            f"{list(expected)} with {config['num_classes']} classes, but the {test.name} files "
            f"found hold images of shape {list(found)} with {test.num_classes} classes; check "
            "--data-dir"
        )
    recorded = config.get("test_fingerprint")
    fingerprint = getattr(test, "fingerprint", None)
    if recorded and not ignore and fingerprint is not None and fingerprint() != recorded:
        raise DataMismatchError(
            f"the {test.name} test files found are not the ones {source} was evaluated on "
            "when it was trained (their SHA-256 fingerprint differs: other images or labels "
            "under the same name, e.g. MNIST's files given as Fashion-MNIST); check --data-dir, "
            "or pass --ignore-data-mismatch if this is a deliberate other copy or subset"
        )


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
    device: torch.device | None = None,
) -> torch.Tensor | None:
    """Validate a batch ``x`` for a network expecting ``[B, *input_shape]`` of ``dtype``.

    ``input_shape`` is the per-sample shape (e.g. ``(1, 28, 28)``) when known; otherwise only the
    channel count (dim 1) is checked, when known. Returns ``None`` when every sample is finite,
    else (with ``nonfinite="propagate"``) the boolean mask ``[B]`` of samples holding NaN/±inf.

    ``device``, when given, is the network's: an input elsewhere is refused.

    Raises:
        InputError: ``x`` is a meta tensor or on another device than the network, is not a
            tensor, has no batch dimension, has the wrong per-sample
            shape or channel count, or is not of ``dtype`` (e.g. uint8 images not yet scaled).
        NonFiniteInputError: a sample holds NaN or ±inf and ``nonfinite="error"``.
    """
    check_nonfinite_policy(nonfinite)
    if not isinstance(x, torch.Tensor):
        raise InputError(f"the input must be a torch.Tensor [B, C, H, W], got {type(x).__name__}")
    if x.device.type == "meta":
        raise InputError("the input is a meta tensor (it has a shape but no values); pass "
                         "real images")
    if device is not None and x.device != device and device.type != "meta":
        raise InputError(f"the input is on {x.device} but the network on {device}; move one "
                         f"of them (x.to({str(device)!r}) or snn.to({str(x.device)!r}))")
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
        raise nonfinite_error(bad, "input sample(s)")
    return bad


def nonfinite_error(bad: torch.Tensor, what: str) -> NonFiniteInputError:
    """The error for the samples flagged in ``bad`` (``[B]`` booleans) holding NaN/±inf;
    ``what`` names them (``"input sample(s)"``, ``"input sequence(s)"``)."""
    indices = bad.nonzero().flatten().tolist()
    listed = ", ".join(map(str, indices[:5])) + (", ..." if len(indices) > 5 else "")
    return NonFiniteInputError(
        f"{len(indices)} of {bad.numel()} {what} contain NaN or inf (batch index {listed}); an "
        "SNN would turn them into confident answers. Clean the data, or pass "
        "nonfinite='propagate' (CLI: --allow-nonfinite) to give them NaN outputs"
    )
