"""ANN → SNN conversion as a torch.fx graph rewrite.

Three explicit passes over one traced graph, in the spirit of PyTorch's FX quantization:

1. **fold** — every eval-mode BatchNorm directly after a conv/linear layer is folded into it
   (docs/methods.md §7.5, with ε); a BatchNorm anywhere else stays as a per-step affine map.
2. **check** — every node must be linear/affine in its input (conv, linear, average pooling,
   flatten, reshapes, residual adds, scaling by a constant) or an activation we can map; any
   other layer or call raises :class:`UnsupportedLayerError` naming it and what to do. Dropout
   is removed (inactive at inference). Nothing is silently passed through.
3. **replace** — each activation (``QCFS``, ``ClippedReLU``, ``nn.ReLU``/``ReLU6`` modules, and
   ``F.relu``/``torch.relu``/``x.relu()`` call sites) becomes the IF neuron the method recipe
   builds (:mod:`spikebridge.methods`). Module activations keep their qualified names
   (``features.2`` stays ``features.2``), so ANN and SNN layers line up for analysis. Then every
   2-D max-pooling (``nn.MaxPool2d``, ``F.max_pool2d``, ``torch.max_pool2d``) whose input
   changes over time (computed from IF neurons) becomes a
   :class:`~spikebridge.spiking_maxpool.SpikingMaxPool2d` (gated by accumulated spikes; the
   network resets its state with the neurons'); one fed only by the constant analog input
   stays an ordinary max-pool, which is exact there (see that module's docstring).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from .activations import (
    QCFS,
    SPIKING_ACTIVATIONS,
    AsymmetricLeakyReLU,
    ClippedReLU,
    SlipReLU,
    SymmetricThresholdReLU,
)
from .batchnorm_folding import FOLDABLE, fold_batchnorm
from .calibration import CalibrationData
from .methods import ActivationSite, ConversionMethod, Preparation, get_method
from .network import SpikingNetwork
from .neurons import IFNeuron, memory_refusal
from .quantization import quantize_weights
from .spiking_maxpool import SpikingMaxPool2d
from .tracing import (
    ConversionProblem,
    UnsupportedLayerError,
    replace_with_module,
    set_module,
    trace,
    views_as_reshapes,
    where,
)

__all__ = [
    "NEURON_MODELS",
    "ConversionProblem",
    "UnsupportedLayerError",
    "check_convertible",
    "convert",
    "find_activation_sites",
    "fold_graph_batchnorms",
    "replace_with_module",
    "spiking_max_pools",
    "trace",
    "use_spike_memory",
]

#: ``convert(neuron=...)``: the method's own IF neurons, or signed neurons with memory (§2.7)
NEURON_MODELS = ("if", "memory")


_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_LINEAR_MODULES = (
    *FOLDABLE,
    *_BATCHNORMS,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.Flatten, nn.Unflatten, nn.Identity,
)
_DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
# max-pooling without a spiking counterpart (nn.MaxPool2d has one: SpikingMaxPool2d)
_MAXPOOL_MODULES = (
    nn.MaxPool1d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
_ACTIVATION_MODULES = (*SPIKING_ACTIVATIONS, nn.ReLU, nn.ReLU6, nn.Hardtanh)
_OTHER_ACTIVATIONS = (
    nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU,
    nn.Softplus, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Softmax, nn.LogSoftmax, nn.RReLU,
)

_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_}
_RELU6_FUNCTIONS = {F.relu6}
_LINEAR_FUNCTIONS = {
    operator.add, operator.iadd, torch.add, torch.flatten, torch.cat, torch.reshape,
    operator.getitem, getattr, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, torch.mean,
}
_SCALING_FUNCTIONS = {operator.mul, operator.truediv, torch.mul}
_DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout}
_MAXPOOL_FUNCTIONS = {
    F.max_pool1d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
    F.adaptive_max_pool3d, torch.max_pool1d, torch.max_pool3d,
}
_MAXPOOL2D_FUNCTIONS = {F.max_pool2d, torch.max_pool2d}
# what F.max_pool2d(..., return_indices=True) traces to
_MAXPOOL2D_WITH_INDICES = {F.max_pool2d_with_indices}
_MAXPOOL2D_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                   "return_indices")
_LINEAR_METHODS = {"view", "reshape", "flatten", "size", "contiguous", "add", "add_", "dim",
                   "mean"}

_MAXPOOL_HINT = (
    "only 2-D max-pooling (nn.MaxPool2d, F.max_pool2d) has a spiking counterpart here; use "
    "MaxPool2d, or swap it for average pooling and fine-tune (spikebridge.to_qcfs(model, "
    "maxpool='avg') does both)"
)
_MAXPOOL_INDICES_HINT = (
    "returns the indices of the maxima (return_indices=True); the spiking max-pool passes "
    "spikes, not indices: use return_indices=False (MaxUnpool has no spiking counterpart either)"
)
_ACTIVATION_HINT = (
    "only ReLU-family activations map to IF neurons: use ReLU / clipped ReLU / QCFS "
    "(spikebridge.to_qcfs rewrites a ReLU network for QCFS fine-tuning), or "
    "SymmetricThresholdReLU / AsymmetricLeakyReLU for signed neurons"
)


def fold_graph_batchnorms(gm: fx.GraphModule, eps: float | None = None) -> None:
    """Pass 1: fold BatchNorm into a directly preceding conv/linear with a single user.

    ``eps``: ε for the fold (``None``: each BatchNorm's own; see :func:`fold_batchnorm`).
    """
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), _BATCHNORMS):
            continue
        producer = node.args[0]
        if (
            isinstance(producer, fx.Node)
            and producer.op == "call_module"
            and isinstance(gm.get_submodule(producer.target), FOLDABLE)
            and len(producer.users) == 1
        ):
            layer = gm.get_submodule(producer.target)
            bn = gm.get_submodule(node.target)
            set_module(gm, producer.target, fold_batchnorm(layer, bn, eps))
            node.replace_all_uses_with(producer)
            gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()
    gm.recompile()


def _module_site(name: str, module: nn.Module) -> ActivationSite | None:
    if isinstance(module, QCFS):
        theta = float(module.theta.detach())
        return ActivationSite(name, "qcfs", theta, module.shift, module.levels, module)
    if isinstance(module, ClippedReLU):
        return ActivationSite(name, "clipped_relu", float(module.theta.detach()), module=module)
    if isinstance(module, SlipReLU):  # v(0) = δ₂θ (§5.3): δ₂ is the site's shift
        theta = float(module.theta.detach())
        return ActivationSite(name, "slip", theta, module.delta2, module.levels, module)
    if isinstance(module, SymmetricThresholdReLU):
        return ActivationSite(name, "strelu", float(module.theta.detach()), module=module)
    if isinstance(module, AsymmetricLeakyReLU):  # α and θ₋ are read from site.module
        return ActivationSite(name, "leaky_threshold", float(module.theta.detach()),
                              module=module)
    if isinstance(module, nn.ReLU6):
        return ActivationSite(name, "clipped_relu", 6.0, module=module)
    if isinstance(module, nn.Hardtanh):
        if module.min_val == -module.max_val and module.max_val > 0:  # clip(z, -θ, θ): stReLU
            return ActivationSite(name, "strelu", float(module.max_val), module=module)
        if module.min_val != 0.0:
            raise UnsupportedLayerError(
                f"layer {name!r} is Hardtanh(min_val={module.min_val}, max_val="
                f"{module.max_val}); only min_val=0 (a clipped ReLU, unsigned IF neuron) or "
                "min_val=-max_val (a symmetric-threshold ReLU, signed IF neuron) maps to an IF "
                "neuron"
            )
        return ActivationSite(name, "clipped_relu", float(module.max_val), module=module)
    if isinstance(module, nn.ReLU):
        return ActivationSite(name, "relu", None, module=module)
    return None


def _check_scaling(node: fx.Node) -> None:
    numbers = [a for a in node.args if isinstance(a, (int, float))]
    tensors = [a for a in node.args if isinstance(a, fx.Node)]
    if node.target is operator.truediv and not isinstance(node.args[1], (int, float)):
        numbers = []
    if len(tensors) != 1 or not numbers:
        raise UnsupportedLayerError(
            f"{getattr(node.target, '__name__', node.target)}{where(node)} multiplies two "
            "signals; only scaling by a constant is linear and survives conversion"
        )


def _check_flatten_dim(where: str, start_dim: Any) -> None:
    if start_dim == 0:
        raise UnsupportedLayerError(
            f"{where} flattens the batch dimension; the simulator folds time into the batch, so "
            "flatten from dim 1 (torch.flatten(x, 1) or nn.Flatten(start_dim=1))"
        )


def _check_module(name: str, module: nn.Module) -> None:
    if type(module) is nn.MaxPool2d:
        if module.return_indices:
            raise UnsupportedLayerError(f"layer {name!r} (MaxPool2d) {_MAXPOOL_INDICES_HINT}")
        return
    if isinstance(module, _MAXPOOL_MODULES):
        raise UnsupportedLayerError(f"layer {name!r} ({type(module).__name__}): {_MAXPOOL_HINT}")
    if isinstance(module, _OTHER_ACTIVATIONS):
        raise UnsupportedLayerError(
            f"layer {name!r} ({type(module).__name__}) has no spiking counterpart; "
            f"{_ACTIVATION_HINT}"
        )
    if not isinstance(module, _LINEAR_MODULES):
        raise UnsupportedLayerError(
            f"layer {name!r} ({type(module).__name__}) is not supported by the converter. "
            "Supported: Conv1d/2d/3d, Linear, BatchNorm, AvgPool / AdaptiveAvgPool, MaxPool2d, "
            "Flatten, Identity, Dropout (removed), residual adds, and QCFS / ClippedReLU / ReLU / "
            "ReLU6 activations. Rewrite the layer from these."
        )
    if isinstance(module, nn.Flatten):
        _check_flatten_dim(f"layer {name!r} (Flatten)", module.start_dim)


def _start_dim(node: fx.Node) -> Any:
    return node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)


_CLAMP_FUNCTIONS = {torch.clamp, torch.clip}


def _clamp_bounds(node: fx.Node) -> tuple[Any, Any] | None:
    """``(min, max)`` of a ``torch.clamp`` / ``x.clamp`` / ``x.clip`` call, else ``None``."""
    if not ((node.op == "call_function" and node.target in _CLAMP_FUNCTIONS)
            or (node.op == "call_method" and node.target in ("clamp", "clip", "clamp_"))):
        return None
    args = list(node.args[1:]) + [None, None]
    low = node.kwargs.get("min", args[0])
    high = node.kwargs.get("max", args[1])
    return low, high


def _function_site(node: fx.Node) -> ActivationSite | None:
    """Activation site for a functional call, ``None`` if the call is linear, else raise."""
    clamp = _clamp_bounds(node)
    if clamp is not None:
        low, high = clamp
        if low == 0 and high is None:
            return ActivationSite(node.name, "relu", None)
        if low == 0 and isinstance(high, int | float) and high > 0:
            return ActivationSite(node.name, "clipped_relu", float(high))
        raise UnsupportedLayerError(
            f"{node.format_node()}{where(node)} clamps to [{low}, {high}]; only clamp(x, 0) "
            "(a ReLU) and clamp(x, 0, a) with a > 0 (a clipped ReLU) map to IF neurons")
    if node.op == "call_method":
        if node.target in ("relu", "relu_"):
            return ActivationSite(node.name, "relu", None)
        if node.target == "flatten":
            _check_flatten_dim(node.format_node() + where(node), _start_dim(node))
        if node.target in _LINEAR_METHODS:
            return None
        raise UnsupportedLayerError(
            f"tensor method .{node.target}() at {node.format_node()}{where(node)} is not "
            f"supported by the converter (supported: {', '.join(sorted(_LINEAR_METHODS))}, relu)"
        )
    fn = node.target
    if fn in _RELU_FUNCTIONS:
        return ActivationSite(node.name, "relu", None)
    if fn in _RELU6_FUNCTIONS:
        return ActivationSite(node.name, "clipped_relu", 6.0)
    if fn in _MAXPOOL2D_FUNCTIONS or fn in _MAXPOOL2D_WITH_INDICES:
        _max_pool2d_window(node)  # raises for what the spiking max-pool cannot do
        return None
    if fn in _MAXPOOL_FUNCTIONS:
        raise UnsupportedLayerError(f"call {node.format_node()}{where(node)}: {_MAXPOOL_HINT}")
    if fn in _SCALING_FUNCTIONS:
        _check_scaling(node)
        return None
    if fn is torch.flatten:
        _check_flatten_dim(node.format_node() + where(node), _start_dim(node))
    if fn in _LINEAR_FUNCTIONS:
        return None
    name = getattr(fn, "__name__", repr(fn))
    raise UnsupportedLayerError(
        f"function {name}{where(node)} has no spiking counterpart: only linear operations "
        "(conv, linear, average pooling or mean, flatten, reshapes, adds, scaling by constants) "
        "and ReLU-family activations (ReLU, clamp(x, 0, a), QCFS) convert"
    )


def _max_pool2d_window(node: fx.Node) -> dict[str, Any]:
    """The window of a ``F.max_pool2d`` / ``torch.max_pool2d`` call (``kernel_size``, ``stride``,
    ``padding``, ``dilation``, ``ceil_mode``); raises for ``return_indices`` or a window computed
    at run time."""
    given = {**dict(zip(_MAXPOOL2D_ARGS, node.args, strict=False)), **node.kwargs}
    if node.target in _MAXPOOL2D_WITH_INDICES or given.get("return_indices"):
        raise UnsupportedLayerError(f"call {node.format_node()}{where(node)} "
                                    f"{_MAXPOOL_INDICES_HINT}")
    window = {name: given.get(name, default) for name, default in (
        ("kernel_size", None), ("stride", None), ("padding", 0), ("dilation", 1),
        ("ceil_mode", False))}
    if window["kernel_size"] is None or any(
            isinstance(v, fx.Node) or (isinstance(v, tuple | list)
                                       and any(isinstance(e, fx.Node) for e in v))
            for v in window.values()):
        raise UnsupportedLayerError(
            f"call {node.format_node()}{where(node)}: the pooling window must be given by "
            "constants (kernel_size, stride, padding, dilation, ceil_mode), not computed from "
            "the input")
    try:
        SpikingMaxPool2d(**window)
    except (TypeError, ValueError) as exc:
        raise UnsupportedLayerError(f"call {node.format_node()}{where(node)}: {exc}") from None
    return window


def _is_max_pool2d(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)) is nn.MaxPool2d
    return node.op == "call_function" and node.target in _MAXPOOL2D_FUNCTIONS


def spiking_max_pools(gm: fx.GraphModule) -> list[str]:
    """After the neurons are in place: every 2-D max-pool whose input changes over time (an IF
    neuron is upstream) becomes a :class:`~spikebridge.spiking_maxpool.SpikingMaxPool2d` (a
    stateful layer: :meth:`SpikingNetwork.reset_state` resets its counts with the neurons). A
    pool fed only by the constant input stays as it is (exact; the time-invariant prefix
    computes it once). A module called at several sites gets one spiking pool per time-varying
    call (each call has its own state). Returns the names of the spiking pools."""
    dynamic: set[fx.Node] = set()
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
        if (node.op == "call_module" and isinstance(gm.get_submodule(node.target), IFNeuron)) or (
                node.op in ("call_module", "call_function", "call_method")
                and any(arg in dynamic for arg in node.all_input_nodes)):
            dynamic.add(node)
    names = []
    for node in list(gm.graph.nodes):
        if node not in dynamic or not _is_max_pool2d(gm, node):
            continue
        if node.op == "call_module":
            pool = SpikingMaxPool2d.from_module(gm.get_submodule(node.target))
            if calls[node.target] == 1:
                set_module(gm, node.target, pool)
                name = node.target
            else:
                name = replace_with_module(gm, node, pool, node.target.replace(".", "_") + "_call")
        else:
            pool = SpikingMaxPool2d(**_max_pool2d_window(node))
            name = replace_with_module(gm, node, pool, node.name)
        names.append(name)
    return names


def _op_name(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_method":
        return f".{node.target}()"
    return getattr(node.target, "__name__", repr(node.target))


def find_activation_sites(
    gm: fx.GraphModule, problems: list[ConversionProblem] | None = None
) -> list[tuple[fx.Node, ActivationSite]]:
    """Pass 2: check every node and list the activation sites in forward (topological) order.

    With ``problems`` (a list), every unconvertible node is appended to it and the check goes
    on, so one pass finds them all; without, the first raises :class:`UnsupportedLayerError`.
    """
    sites: list[tuple[fx.Node, ActivationSite]] = []
    for node in list(gm.graph.nodes):
        try:
            if node.op == "call_module":
                module = gm.get_submodule(node.target)
                if isinstance(module, _DROPOUT_MODULES):
                    node.replace_all_uses_with(node.args[0])
                    gm.graph.erase_node(node)
                    continue
                site = _module_site(node.target, module)
                if site is None:
                    _check_module(node.target, module)
                else:
                    sites.append((node, site))
            elif node.op in ("call_function", "call_method"):
                if node.op == "call_function" and node.target in _DROPOUT_FUNCTIONS:
                    node.replace_all_uses_with(node.args[0])
                    gm.graph.erase_node(node)
                    continue
                site = _function_site(node)
                if site is not None:
                    sites.append((node, site))
        except UnsupportedLayerError as exc:
            if problems is None:
                raise
            name = str(node.target) if node.op == "call_module" else node.name
            problems.append(ConversionProblem(name, _op_name(gm, node), str(exc)))
    return sites


def check_convertible(model: nn.Module) -> list[ConversionProblem]:
    """Every node of ``model`` that :func:`convert` cannot turn into a spiking network, from one
    trace: ``[]`` when it converts. Each problem names the node, the op and what to do."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"check_convertible() needs a torch.nn.Module, got {type(model).__name__}")
    try:
        gm = trace(copy.deepcopy(model).eval())
    except UnsupportedLayerError as exc:
        return [ConversionProblem(type(model).__name__, "torch.fx trace", str(exc))]
    problems: list[ConversionProblem] = []
    sites = find_activation_sites(gm, problems)
    if not sites and not problems:
        problems.append(ConversionProblem(
            type(model).__name__, "activations",
            "the model has no activation layers, so there is nothing to turn into IF neurons"))
    return problems


def _raise_problems(model: nn.Module, problems: Sequence[ConversionProblem]) -> None:
    if not problems:
        return
    listed = "\n".join(f"  - {p}" for p in problems)
    raise UnsupportedLayerError(
        f"{type(model).__name__} cannot be converted: {len(problems)} problem(s) "
        f"(spikebridge.check_convertible lists them too):\n{listed}", problems)


def _resolve_threshold(
    site: ActivationSite, thresholds: float | Mapping[str, float] | None
) -> ActivationSite:
    if isinstance(thresholds, Mapping):
        if site.name in thresholds:
            return ActivationSite(site.name, site.kind, float(thresholds[site.name]), site.shift,
                                  site.levels, site.module)
    elif thresholds is not None and site.threshold is None:
        return ActivationSite(site.name, site.kind, float(thresholds), site.shift, site.levels,
                              site.module)
    return site


def _input_shape(model: nn.Module, given: Sequence[int] | None) -> tuple[int, ...] | None:
    """The per-sample input shape to enforce: ``given``, else ``model.input_shape``, else None."""
    shape = given if given is not None else getattr(model, "input_shape", None)
    if shape is None:
        return None
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"input_shape must be a sequence of ints like (1, 28, 28), got {shape!r}"
                         ) from exc
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must hold positive sizes, got {shape}")
    return shape


def convert(
    model: nn.Module,
    method: str | ConversionMethod = "qcfs",
    *,
    thresholds: float | Mapping[str, float] | None = None,
    calibration_data: CalibrationData | Any | None = None,
    calibration_samples: int | None = 1000,
    weight_bits: int | None = None,
    weight_rounding: str = "nearest",
    input_shape: Sequence[int] | None = None,
    neuron: str = "if",
    progress: bool = False,
    **method_params: Any,
) -> SpikingNetwork:
    """Convert a trained ANN into a spiking network (docs/methods.md §2–§7).

    ``method``: a registered name (``spikebridge.list_methods()``: ``"qcfs"`` §3.3, ``"cos"``
    §4, ``"slip"`` §5, ``"strelu"`` §6, ``"ecc"`` §7.3–7.5, ``"maxnorm"``/``"robustnorm"``/
    ``"threshold-balancing"``/``"rmp"``/``"opi"`` §7.9, …) with its parameters as keyword
    arguments, or a :class:`~spikebridge.methods.ConversionMethod`.
    ``thresholds``: θ for activations without a trained threshold (plain ReLUs): one float for
    all of them, or ``{site name: θ}`` (which also overrides trained thresholds).
    ``calibration_data``: for data-based methods (ECC and the classic baselines), the images their
    normalization statistics are measured on — normally training images — as a
    :class:`~spikebridge.calibration.CalibrationData` or any iterable of ``(x, y)`` batches, of
    which the first ``calibration_samples`` images are used.
    ``weight_bits``: quantize every conv/linear weight to ``b``-bit signed integers times a
    per-layer step, after the method's normalization (§7.6); ``weight_rounding``: ``"nearest"``
    (default), ``"trunc"``, or ``"ecc"`` (ECC's own grid: 2^(b−1) levels, truncated).
    ``input_shape``: the per-sample input shape, e.g. ``(1, 28, 28)``; simulation then refuses
    inputs of any other shape with a clear error (default: the model's ``input_shape`` attribute,
    which :func:`spikebridge.load_checkpoint` sets; else only the channel count is checked).
    ``neuron``: ``"if"`` (default) keeps the method's IF neurons; ``"memory"`` makes each a
    signed neuron with memory (§2.7), whose spike count follows the running sum of its input
    whatever the input's order (event-camera input) — for methods whose neurons reset by
    subtraction and fix ``v(0)`` before the run (not COS, StReLU, or hard-reset baselines).

    The ANN is not modified. The result is an ``nn.Module``; run it with
    :func:`spikebridge.simulate` / :func:`spikebridge.evaluate`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert() needs a torch.nn.Module, got {type(model).__name__}")
    recipe = get_method(method, **method_params)
    if neuron not in NEURON_MODELS:
        raise ValueError(f"neuron must be one of {NEURON_MODELS}, got {neuron!r}")
    if weight_bits is not None:
        from .quantization import ROUNDING, check_bits

        check_bits(weight_bits)
        if weight_rounding not in ROUNDING:
            raise ValueError(f"weight_rounding must be one of {ROUNDING}, got "
                             f"{weight_rounding!r}")
    ann = copy.deepcopy(model).eval()
    gm = trace(ann)
    views_as_reshapes(gm)
    fold_graph_batchnorms(gm, recipe.bn_epsilon())
    problems: list[ConversionProblem] = []
    sites = find_activation_sites(gm, problems)
    _raise_problems(model, problems)
    if not sites:
        raise UnsupportedLayerError(
            f"{type(model).__name__} has no activation layers, so there is nothing to turn into "
            "IF neurons (expected QCFS / ClippedReLU / ReLU activations)"
        )
    if isinstance(thresholds, Mapping):
        unknown = sorted(set(thresholds) - {site.name for _, site in sites})
        if unknown:
            raise ValueError(
                f"thresholds given for unknown activation(s) {unknown}; the model's activation "
                f"sites are {[site.name for _, site in sites]}"
            )
    if thresholds is not None and not isinstance(thresholds, Mapping) and all(
            site.threshold is not None for _, site in sites):
        raise ValueError(
            f"thresholds={thresholds!r} applies to activations without a trained threshold "
            "(plain ReLUs), and every activation of this model has one; drop it, or pass "
            "{site name: θ} to override a trained threshold on purpose")
    recipe.check_source([_resolve_threshold(site, thresholds) for _, site in sites])
    data = None
    if recipe.needs_calibration_data():
        if calibration_data is None:
            raise ValueError(
                f"method {recipe.name!r} measures its normalization statistics on data: pass "
                "calibration_data= (training images; CLI: taken from the model's training set, "
                "--calibration-samples N)"
            )
        data = calibration_data if isinstance(calibration_data, CalibrationData) else (
            CalibrationData(calibration_data, calibration_samples, progress)
        )
    ann_graph = copy.deepcopy(gm) if recipe.needs_preparation() else None
    sources: dict[str, str] = {}
    ann_nodes: dict[str, str] = {}
    for node, site in sites:
        if_neuron: IFNeuron = recipe.neuron(_resolve_threshold(site, thresholds))
        if node.op == "call_module" and node.target not in sources:
            set_module(gm, node.target, if_neuron)
            sources[node.target] = site.name
            ann_nodes[node.target] = node.name
            continue
        # A functional call (F.relu), or a module activation called more than once (a shared
        # nn.ReLU): every call site gets its own neuron, since each has its own membrane state.
        base = site.name.replace(".", "_") + ("_call" if node.op == "call_module" else "")
        ann_node = node.name
        name = replace_with_module(gm, node, if_neuron, base, sources)
        ann_nodes[name] = ann_node
        sources[name] = site.name
    spiking_max_pools(gm)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    snn = SpikingNetwork(gm, recipe, sources)
    snn.input_shape = _input_shape(model, input_shape)
    if ann_graph is not None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        recipe.prepare(snn, Preparation(ann_graph, ann_nodes, data, device))
    if weight_bits is not None:
        snn.replace_network(quantize_weights(snn.network, weight_bits, weight_rounding))
        snn.weight_bits = int(weight_bits)
    if neuron == "memory":
        use_spike_memory(snn)
    return snn


def use_spike_memory(snn: SpikingNetwork) -> None:
    """Make every IF neuron of ``snn`` a signed neuron with memory (docs/methods.md §2.7), or
    raise one :class:`ValueError` naming every neuron that cannot be one and why."""
    neurons = snn.neurons()
    problems = {name: memory_refusal(n) for name, n in neurons.items()}
    problems = {name: why for name, why in problems.items() if why}
    if problems:
        shown = "; ".join(f"{name} {why}" for name, why in list(problems.items())[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"method {snn.method.name!r} cannot use signed neurons with memory "
                         f"(neuron='memory', §2.7): {shown}{more}")
    for n in neurons.values():
        n.enable_memory()
