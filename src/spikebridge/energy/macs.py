r"""ANN multiply-accumulates, per layer, from the graph and the real input shape (docs/energy.md).

Convolution :math:`k_hk_w(C_{in}/g)C_{out}H_{out}W_{out}` (stride, padding, dilation and groups
through the real output shape), linear :math:`d_{in}d_{out}`, average pooling one MAC per window
element per output (a depth-wise convolution with weight :math:`1/k^2`), an unfolded BatchNorm
one MAC per element. Biases, activations and constant scalings are free (docs/methods.md §8.1).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..network import SpikingNetwork
from ..neurons import IFNeuron
from ..tracing import UnsupportedLayerError, trace

__all__ = ["AnnCost", "LayerCost", "ann_operations"]

CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSE_MODULES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
BATCHNORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
AVG_POOL_MODULES = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}
ADAPTIVE_POOL_MODULES = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}
AVG_POOL_FUNCTIONS = {F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3}
ADAPTIVE_POOL_FUNCTIONS = {F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2,
                            F.adaptive_avg_pool3d: 3}
CONV_FUNCTIONS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
SCALING_FUNCTIONS = {operator.mul, operator.truediv, torch.mul, torch.div}
ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
SHAPE_FUNCTIONS = {torch.flatten, torch.cat, torch.reshape, operator.getitem, getattr,
                    torch.squeeze, torch.unsqueeze}
DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


@dataclass(frozen=True)
class LayerCost:
    """One layer's cost per image: ``kind`` is conv / linear / avgpool / batchnorm."""

    name: str
    kind: str
    macs: int


@dataclass
class AnnCost:
    """Per-layer MACs of one forward pass of one image (:func:`ann_operations`)."""

    layers: list[LayerCost]

    @property
    def total(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def by_kind(self) -> dict[str, int]:
        kinds: dict[str, int] = {}
        for layer in self.layers:
            kinds[layer.kind] = kinds.get(layer.kind, 0) + layer.macs
        return kinds

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_kind": self.by_kind(),
                "layers": {layer.name: {"kind": layer.kind, "macs": layer.macs}
                           for layer in self.layers}}


def ntuple(value: Any, dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    return tuple(int(v) for v in value)


def per_sample(t: torch.Tensor) -> int:
    return t.numel() // t.shape[0]


def _adaptive_window_total(size_in: Sequence[int], size_out: Sequence[int]) -> int:
    """Σ over output positions of the adaptive-pooling window size (PyTorch's window rule)."""
    total = 1
    for n_in, n_out in zip(size_in, size_out, strict=True):
        total *= sum(math.ceil((i + 1) * n_in / n_out) - (i * n_in) // n_out
                     for i in range(n_out))
    return total


def _module_cost(module: nn.Module, args: tuple, out: Any) -> tuple[str, int] | None:
    if not isinstance(out, torch.Tensor):
        return None
    if isinstance(module, CONV_MODULES):
        k = math.prod(ntuple(module.kernel_size, len(module.kernel_size)))
        return "conv", per_sample(out) * (module.in_channels // module.groups) * k
    if isinstance(module, CONV_TRANSPOSE_MODULES):
        k = math.prod(module.kernel_size)
        return "conv", per_sample(args[0]) * (module.out_channels // module.groups) * k
    if isinstance(module, nn.Linear):
        return "linear", per_sample(out) * module.in_features
    if isinstance(module, BATCHNORM_MODULES):
        return "batchnorm", per_sample(out)
    for kind, dims in AVG_POOL_MODULES.items():
        if isinstance(module, kind):
            return "avgpool", per_sample(out) * math.prod(ntuple(module.kernel_size, dims))
    for kind, dims in ADAPTIVE_POOL_MODULES.items():
        if isinstance(module, kind):
            x = args[0]
            channels = x.shape[1] if x.dim() > dims + 1 else 1
            return "avgpool", channels * _adaptive_window_total(x.shape[-dims:], out.shape[-dims:])
    return None


def _function_cost(target: Any, args: tuple, kwargs: dict, out: Any) -> tuple[str, int] | None:
    if not isinstance(out, torch.Tensor):
        return None
    if target in CONV_FUNCTIONS:
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        return "conv", per_sample(out) * math.prod(weight.shape[1:])
    if target is F.linear:
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        return "linear", per_sample(out) * weight.shape[-1]
    if target in AVG_POOL_FUNCTIONS:
        dims = AVG_POOL_FUNCTIONS[target]
        kernel = args[1] if len(args) > 1 else kwargs["kernel_size"]
        return "avgpool", per_sample(out) * math.prod(ntuple(kernel, dims))
    if target in ADAPTIVE_POOL_FUNCTIONS:
        dims = ADAPTIVE_POOL_FUNCTIONS[target]
        x = args[0]
        channels = x.shape[1] if x.dim() > dims + 1 else 1
        return "avgpool", channels * _adaptive_window_total(x.shape[-dims:], out.shape[-dims:])
    return None


class _CostInterpreter(fx.Interpreter):
    """Runs a graph on one image and records the MACs of every node (IF neurons: identity)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.layers: list[LayerCost] = []
        self._node: fx.Node | None = None

    def run_node(self, n: fx.Node) -> Any:
        self._node = n
        return super().run_node(n)

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        module = self.fetch_attr(target)
        if isinstance(module, IFNeuron):
            return args[0]
        out = super().call_module(target, args, kwargs)
        cost = _module_cost(module, args, out)
        if cost is not None:
            self.layers.append(LayerCost(self._node.name, *cost))
        return out

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        out = super().call_function(target, args, kwargs)
        cost = _function_cost(target, args, kwargs, out)
        if cost is not None:
            self.layers.append(LayerCost(self._node.name, *cost))
        return out


def module_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(iter(model.parameters()), None)
    if param is None:
        param = next(iter(model.buffers()), None)
    if param is None:
        return torch.device("cpu"), torch.float32
    dtype = param.dtype if param.is_floating_point() else torch.float32
    return param.device, dtype


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def _hooked_costs(model: nn.Module, x: torch.Tensor) -> list[LayerCost]:
    """Fallback for models torch.fx cannot trace: forward hooks on the leaf modules."""
    layers: list[LayerCost] = []
    handles = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue

        def hook(m, args, out, name=name):
            cost = _module_cost(m, args, out)
            if cost is not None:
                layers.append(LayerCost(name, *cost))

        handles.append(module.register_forward_hook(hook))
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return layers


def ann_operations(model: nn.Module, input_shape: Sequence[int]) -> AnnCost:
    """MACs per layer of one forward pass of ``model`` on one image of ``input_shape``.

    ``input_shape`` excludes the batch (``(3, 32, 32)``). ``model`` is any ``nn.Module`` (traced
    with torch.fx; forward hooks on leaf modules if it cannot be traced), an ``fx.GraphModule``,
    or a :class:`~spikebridge.network.SpikingNetwork` (its converted graph read as an ANN: BN
    folded, IF neurons as the activations they replaced). Convolutions count every output
    position, padded or not (the convention of every published count).
    """
    gm: fx.GraphModule | None
    if isinstance(model, SpikingNetwork):
        gm = model.network
    elif isinstance(model, fx.GraphModule):
        gm = model
    else:
        try:
            gm = trace(model)
        except UnsupportedLayerError:
            gm = None
    device, dtype = module_device_dtype(model)
    x = torch.zeros(1, *input_shape, device=device, dtype=dtype)
    with _eval_mode(model), torch.inference_mode():
        if gm is None:
            return AnnCost(_hooked_costs(model, x))
        interpreter = _CostInterpreter(gm)
        interpreter.run(x)
    return AnnCost(interpreter.layers)
