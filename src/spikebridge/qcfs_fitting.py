"""Give a user's own ReLU network the QCFS activation COS needs (docs/methods.md §3).

:func:`to_qcfs` traces the model (torch.fx) and replaces every ReLU-family activation —
``nn.ReLU``, ``nn.ReLU6``, ``nn.Hardtanh(0, a)``, ``F.relu`` / ``torch.relu`` / ``x.relu()``,
``torch.clamp(x, 0, a)`` / ``x.clamp(0, a)`` — by :class:`~spikebridge.activations.QCFS` with
``L`` levels and a trainable threshold θ. θ starts at

* the ``percentile`` (99.9 by default) of that activation's **non-zero** outputs on a few
  calibration batches (the robust scale of docs/methods.md §7.9, nearest rank), when ``data`` is
  given — the choice for plain ReLUs, whose outputs have no upper bound;
* the clip value ``a`` of a clipped activation (ReLU6: 6) when no data is given.

Max-pooling: ``maxpool="keep"`` (the default) leaves it; the converter turns a 2-D max-pool into
a spiking max-pool gated by accumulated spike counts (:mod:`spikebridge.spiking_maxpool`: its
output rate is the largest input rate, but spikes arrive with a different timing). With
``maxpool="avg"`` every max-pooling (``nn.MaxPool1d/2d/3d`` modules, ``F.max_pool*d`` /
``torch.max_pool*d`` calls, adaptive max-pooling) becomes an ``nn.AvgPool*d`` (resp.
``nn.AdaptiveAvgPool*d``) of the same kernel, stride, padding and ceil_mode, with
``count_include_pad=False``: a padded position is left out of the average, as max-pooling's
``-inf`` padding leaves it out of the max (without padding the two choices agree). Average
pooling is linear and converts exactly; fine-tuning recovers the accuracy the swap costs. The
result is an ``nn.Module`` to fine-tune with the
user's own training loop — a few epochs at a small learning rate (e.g. 1/10 of the original,
θ trained with the weights; QCFS's straight-through gradient is built in) — and then to
convert with ``qcfs`` or ``cos``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from .activations import QCFS, ClippedReLU
from .calibration import CalibrationData, TopKPercentile
from .convert import _function_site, _module_site
from .methods import ActivationSite
from .tracing import UnsupportedLayerError, replace_with_module, set_module, trace

__all__ = ["MAXPOOL_OPTIONS", "to_qcfs"]

MAXPOOL_OPTIONS = ("keep", "avg")
_MAXPOOL_TO_AVG = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d,
                   nn.MaxPool3d: nn.AvgPool3d}
_ADAPTIVE_MAXPOOL_TO_AVG = {nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d,
                            nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
                            nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d}
_MAXPOOL_FUNCTIONS = {F.max_pool1d: nn.AvgPool1d, F.max_pool2d: nn.AvgPool2d,
                      F.max_pool3d: nn.AvgPool3d, torch.max_pool1d: nn.AvgPool1d,
                      torch.max_pool2d: nn.AvgPool2d, torch.max_pool3d: nn.AvgPool3d}
_ADAPTIVE_MAXPOOL_FUNCTIONS = {F.adaptive_max_pool1d: nn.AdaptiveAvgPool1d,
                               F.adaptive_max_pool2d: nn.AdaptiveAvgPool2d,
                               F.adaptive_max_pool3d: nn.AdaptiveAvgPool3d}
# what F.max_pool*d(..., return_indices=True) traces to
_WITH_INDICES = {F.max_pool1d_with_indices, F.max_pool2d_with_indices,
                 F.max_pool3d_with_indices, F.adaptive_max_pool1d_with_indices,
                 F.adaptive_max_pool2d_with_indices, F.adaptive_max_pool3d_with_indices}
_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
              "return_indices")


def _relu_family_site(gm: fx.GraphModule, node: fx.Node) -> ActivationSite | None:
    """The ReLU-family activation at ``node`` as the converter reads it (a plain ReLU, or a
    clipped one with its clip value as ``threshold``), ``None`` for anything else — including
    activations that already have a trained threshold (QCFS, our ClippedReLU)."""
    try:
        if node.op == "call_module":
            site = _module_site(node.target, gm.get_submodule(node.target))
        elif node.op in ("call_function", "call_method"):
            site = _function_site(node)
        else:
            return None
    except UnsupportedLayerError:
        return None
    if site is None or site.kind not in ("relu", "clipped_relu") or isinstance(
            site.module, ClippedReLU):
        return None
    return site


def _no_dilation(dilation: Any) -> bool:
    return all(d == 1 for d in (dilation if isinstance(dilation, tuple | list) else (dilation,)))


def _average_pool(kind: type[nn.Module], kernel_size: Any, stride: Any, padding: Any,
                  ceil_mode: Any) -> nn.Module:
    """The average pooling that replaces a max-pool of this window (module docstring)."""
    stride = None if stride is None or (isinstance(stride, tuple | list) and not stride) else (
        stride)
    return kind(kernel_size, stride, padding, ceil_mode=bool(ceil_mode), count_include_pad=False)


def _swap_maxpool(gm: fx.GraphModule) -> int:
    """``maxpool="avg"``: every max-pooling becomes average pooling of the same window."""
    swapped = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            avg = _MAXPOOL_TO_AVG.get(type(module))
            adaptive = _ADAPTIVE_MAXPOOL_TO_AVG.get(type(module))
            if avg is None and adaptive is None:
                continue
            if module.return_indices or (avg is not None and not _no_dilation(module.dilation)):
                raise ValueError(f"{node.target}: max-pooling with dilation or return_indices "
                                 "has no average-pooling equivalent")
            set_module(gm, node.target, adaptive(module.output_size) if avg is None else
                       _average_pool(avg, module.kernel_size, module.stride, module.padding,
                                     module.ceil_mode))
            swapped += 1
        elif node.op == "call_function" and node.target in _WITH_INDICES:
            raise ValueError(f"{node.name}: max-pooling with return_indices has no "
                             "average-pooling equivalent")
        elif node.op == "call_function" and node.target in _MAXPOOL_FUNCTIONS:
            given = {**dict(zip(_POOL_ARGS, node.args, strict=False)), **node.kwargs}
            if not _no_dilation(given.get("dilation", 1)) or given.get("return_indices"):
                raise ValueError(f"{node.name}: max-pooling with dilation or return_indices "
                                 "has no average-pooling equivalent")
            pool = _average_pool(_MAXPOOL_FUNCTIONS[node.target], given["kernel_size"],
                                 given.get("stride"), given.get("padding", 0),
                                 given.get("ceil_mode", False))
            replace_with_module(gm, node, pool, f"{node.name}_avg")
            swapped += 1
        elif node.op == "call_function" and node.target in _ADAPTIVE_MAXPOOL_FUNCTIONS:
            given = {**dict(zip(("input", "output_size", "return_indices"), node.args,
                                strict=False)), **node.kwargs}
            if given.get("return_indices"):
                raise ValueError(f"{node.name}: max-pooling with return_indices has no "
                                 "average-pooling equivalent")
            pool = _ADAPTIVE_MAXPOOL_FUNCTIONS[node.target](given["output_size"])
            replace_with_module(gm, node, pool, f"{node.name}_avg")
            swapped += 1
    gm.recompile()
    return swapped


def _observed_percentiles(gm: fx.GraphModule, nodes: list[fx.Node], data: CalibrationData,
                          percentile: float) -> dict[str, float]:
    """The ``percentile`` of the non-zero outputs of each node over the calibration images."""
    stats = {node.name: TopKPercentile(percentile, None) for node in nodes}
    watched = {node.name for node in nodes}

    class _Watch(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            if n.name in watched:
                stats[n.name].update(out[out != 0])
            return out

    device = next((p.device for p in gm.parameters()), torch.device("cpu"))
    with torch.inference_mode():
        for x in data.images(device, description="to_qcfs: activation percentiles"):
            _Watch(gm).run(x)
    result = {}
    for name, stat in stats.items():
        try:
            result[name] = stat.value()
        except ValueError:
            raise ValueError(f"activation {name!r} was zero on every calibration image, so it "
                             "gives no scale for θ; use more (or other) calibration data") from None
    return result


def to_qcfs(
    model: nn.Module,
    levels: int = 4,
    *,
    data: CalibrationData | Iterable[Any] | None = None,
    samples: int = 256,
    percentile: float = 99.9,
    maxpool: str | None = "keep",
    shift: float = 0.5,
    progress: bool = False,
    theta: float | None = None,
) -> fx.GraphModule:
    """``model`` with every ReLU-family activation replaced by trainable ``QCFS(levels, θ)``
    (module docstring). ``data``: calibration batches (``(x, y)`` pairs or tensors; the first
    ``samples`` images are used) to start θ at the ``percentile`` of each activation's non-zero
    outputs; needed for plain ReLUs. ``maxpool``: ``"keep"`` (default; ``None`` means the same)
    leaves max-pooling, which converts to a spiking max-pool; ``"avg"`` swaps it for average
    pooling of the same window, ``count_include_pad=False`` (module docstring). ``theta``:
    start every θ at this value instead, without data — for rebuilding the structure of a
    fine-tuned model whose trained θ is loaded right after (a checkpoint's weights).

    The model is not modified. Returns a ``torch.fx.GraphModule`` in the model's train/eval
    mode, to fine-tune and then :func:`spikebridge.convert` with ``qcfs`` or ``cos``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"to_qcfs() needs a torch.nn.Module, got {type(model).__name__}")
    if maxpool is None:
        maxpool = "keep"
    if not isinstance(maxpool, str) or maxpool not in MAXPOOL_OPTIONS:
        raise ValueError(f"maxpool must be one of {MAXPOOL_OPTIONS} ('keep': leave max-pooling, "
                         f"converted to a spiking max-pool; 'avg': average pooling), got "
                         f"{maxpool!r}")
    training = model.training
    gm = trace(copy.deepcopy(model).eval())
    if maxpool == "avg":
        _swap_maxpool(gm)
    sites = [(node, site.threshold) for node in gm.graph.nodes
             for site in [_relu_family_site(gm, node)] if site is not None]
    if not sites:
        raise ValueError(f"{type(model).__name__} has no ReLU-family activation to replace")
    if theta is not None:
        if data is not None:
            raise ValueError("to_qcfs(): give data= (θ from the activations' outputs) or "
                             "theta= (one starting θ for all), not both")
        thetas = {n.name: float(theta) for n, _ in sites}
    elif data is not None:
        calibration = data if isinstance(data, CalibrationData) else CalibrationData(
            data, samples, progress)
        thetas = _observed_percentiles(gm, [n for n, _ in sites], calibration, percentile)
    else:
        unbounded = [n.name for n, clip in sites if clip is None]
        if unbounded:
            raise ValueError(
                f"activations {', '.join(unbounded[:5])} are plain ReLUs, which have no clip "
                "value to start θ from; pass data= (a few batches of training images) to start "
                f"it at the {percentile:g}th percentile of their outputs")
        thetas = {n.name: float(clip) for n, clip in sites}
    used: set[str] = set()
    for node, _clip in sites:
        qcfs = QCFS(levels, thetas[node.name], shift)
        if node.op == "call_module" and node.target not in used:
            set_module(gm, node.target, qcfs)
            used.add(node.target)
            continue
        replace_with_module(gm, node, qcfs, f"{node.name}_qcfs")
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return gm.train(training)
