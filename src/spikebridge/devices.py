"""Torch devices named by users (``--device``), checked before any work is done.

``torch.device("banana")`` raises a bare ``RuntimeError`` and ``torch.device("cuda")`` succeeds on
a machine without CUDA, failing only at the first tensor moved there, possibly after an epoch of
work. :func:`resolve_device` turns both into one clear error up front.
"""

from __future__ import annotations

import torch

__all__ = ["DeviceError", "resolve_device"]


class DeviceError(ValueError):
    """A device name that is malformed or names hardware this machine does not have."""


def _available(kind: str) -> tuple[bool, int]:
    """(backend present, number of devices) for a device type."""
    if kind == "cpu":
        return True, 1
    if kind == "cuda":
        return torch.cuda.is_available(), torch.cuda.device_count()
    if kind == "mps":
        backend = getattr(torch.backends, "mps", None)
        present = bool(backend is not None and backend.is_available())
        return present, int(present)
    if kind == "xpu":
        xpu = getattr(torch, "xpu", None)
        present = bool(xpu is not None and xpu.is_available())
        return present, (xpu.device_count() if present else 0)
    return False, 0


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The ``torch.device`` for ``name`` (``None`` → cpu), or :class:`DeviceError`.

    Raises:
        DeviceError: the name is not a torch device (``banana``), its backend is missing here
            (``cuda`` without a CUDA build or driver), or its index is out of range (``cuda:3``
            on a one-GPU machine). The message lists what this machine has.
    """
    if name is None:
        return torch.device("cpu")
    if isinstance(name, torch.device):
        device = name
    else:
        text = str(name).strip()
        try:
            device = torch.device(text)
        except (RuntimeError, ValueError) as exc:
            raise DeviceError(
                f"{text!r} is not a torch device; use cpu, cuda or cuda:N "
                f"({_inventory()})"
            ) from exc
    present, count = _available(device.type)
    if not present:
        raise DeviceError(
            f"{device}: this machine has no usable {device.type} device "
            f"({_inventory()})"
        )
    if device.index is not None and device.index >= count:
        raise DeviceError(
            f"{device}: index {device.index} is out of range, this machine has "
            f"{count} {device.type} device(s)"
        )
    return device


def _inventory() -> str:
    kinds = ["cpu"]
    for kind in ("cuda", "mps", "xpu"):
        present, count = _available(kind)
        if present:
            kinds.append(f"{kind} x{count}" if count > 1 else kind)
    return "available: " + ", ".join(kinds)
