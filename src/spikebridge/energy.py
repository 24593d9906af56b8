r"""Exact operation and energy accounting (docs/energy.md; conventions: docs/methods.md §8).

Three numbers, each exact for the network and input shape at hand:

* **ANN MACs** (:func:`ann_operations`): from the graph and the real input shape, per layer —
  convolution :math:`k_hk_w(C_{in}/g)C_{out}H_{out}W_{out}` (stride, padding, dilation and
  groups through the real output shape), linear :math:`d_{in}d_{out}`, average pooling one MAC
  per window element per output (a depth-wise convolution with weight :math:`1/k^2`), an
  unfolded BatchNorm one MAC per element. Biases, activations and constant scalings are free.
* **SNN synaptic operations** (:class:`OperationCounter`): counted from the spike events each IF
  neuron actually emits (its output :math:`x \in \{0, +A, -A_-\}`; a nonzero value is one event,
  whatever :math:`A` is, a signed spike is one event), each event costing its exact **fan-out**:
  the number of accumulates it triggers in the layers it reaches before the next IF neurons or
  the output. Fan-outs come from :func:`network_fanout`, a copy of the spiking body in which
  every synapse weighs 1 (all-ones convolutions and linears without bias, sum- instead of
  average-pooling, constant scalings and BatchNorm as identities) and every IF neuron emits a
  fresh leaf tensor: the gradient of the sum of the next neurons' inputs with respect to a leaf
  element is its fan-out — border-aware, with stride, padding (and its mode), dilation and groups
  honoured, and average pooling folded into the next layer's connectivity (§8.2). Pooling's own
  additions are not counted (§8.2's convention).
* **Energy** (:class:`EnergyModel`): :math:`E_{ANN} = E_{MAC}\cdot\#MAC`,
  :math:`E_{SNN} = E_{MAC}\cdot\#MAC_{analog} + E_{AC}\cdot\#SOP` (§8.3), with Horowitz's 45 nm
  defaults 4.6 pJ / 0.9 pJ.

The first layer fed by the analog image runs in the time-invariant prefix
(:class:`~spikebridge.network.SpikingNetwork`): its MACs are counted once per image (what the
simulator computes, ``first_layer="once"``) or at every presented frame (``"every_step"``, what
hardware re-presenting the image does). COS's pre-simulation (§4.5–4.6): a calibrating layer
replays the first ρ input frames once per pass (``iterations`` passes, one for the lightweight
variant) before its real run; each pass re-delivers those frames' spikes, so it costs exactly
the SOPs into that layer during frames 1..ρ again. Neuron updates (add, compare, reset), the
constant current injections (bias, first-layer current, ECC's TRE current) and memory accesses
are not counted; bias accumulates are reported (``bias_acs``) and can be charged with
``EnergyModel(count_bias=True)``.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from . import neurons as _neurons
from .neurons import IFNeuron, input_current

if TYPE_CHECKING:
    from .network import SpikingNetwork

__all__ = [
    "AC_PJ_45NM",
    "CSV_COLUMNS",
    "FIRST_LAYER_CONVENTIONS",
    "MAC_PJ_45NM",
    "AnnCost",
    "EnergyModel",
    "LayerCost",
    "OperationCounter",
    "OperationReport",
    "ann_operations",
    "count_synaptic_operations",
    "csv_values",
    "format_energy_table",
    "iteration_operations",
    "network_fanout",
    "plot_accuracy_vs_energy",
    "plot_layer_operations",
    "record_fields",
    "record_operations",
    "synaptic_fanout",
]

#: Energy of a 32-bit floating-point multiply-accumulate at 45 nm, pJ (Horowitz, ISSCC 2014).
MAC_PJ_45NM = 4.6
#: Energy of a 32-bit floating-point add (accumulate) at 45 nm, pJ (Horowitz, ISSCC 2014).
AC_PJ_45NM = 0.9
#: How the analog first layer is charged: computed once per image, or at every presented frame.
FIRST_LAYER_CONVENTIONS = ("once", "every_step")


@dataclass(frozen=True)
class EnergyModel:
    """Per-operation energies (pJ) and the counting conventions (docs/methods.md §8).

    ``mac_pj``: one multiply-accumulate on analog values (ANN layers, the SNN's first layer);
    ``ac_pj``: one synaptic accumulate (a spike event reaching one target);
    ``first_layer``: ``"once"`` (the simulator's cached first-layer current) or
    ``"every_step"`` (recomputed at every presented frame, pre-simulation frames included);
    ``count_bias``: also charge one accumulate per biased neuron per step.
    """

    mac_pj: float = MAC_PJ_45NM
    ac_pj: float = AC_PJ_45NM
    first_layer: str = "once"
    count_bias: bool = False

    def __post_init__(self) -> None:
        for name in ("mac_pj", "ac_pj"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite energy >= 0 (pJ), got {value!r}")
        if self.first_layer not in FIRST_LAYER_CONVENTIONS:
            raise ValueError(
                f"first_layer must be one of {FIRST_LAYER_CONVENTIONS}, got {self.first_layer!r}"
            )

    def conventions(self) -> dict[str, Any]:
        """What the numbers of a report mean, as plain data for result files."""
        return {
            "mac_pj": self.mac_pj, "ac_pj": self.ac_pj,
            "energy_source": "Horowitz, ISSCC 2014, 45 nm, 32-bit float"
            if (self.mac_pj, self.ac_pj) == (MAC_PJ_45NM, AC_PJ_45NM) else "user-given",
            "first_layer": self.first_layer, "bias_in_energy": self.count_bias,
            "sops": "exact: spike events x fan-out (docs/methods.md §8.2)",
            "pooling": "folded into the next layer's fan-out; its own additions not counted",
            "not_counted": "neuron updates, constant current injections, memory access",
            "units": "per image (averaged over the evaluated samples)",
        }


# --------------------------------------------------------------------------------------------
# ANN MACs
# --------------------------------------------------------------------------------------------

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_AVG_POOLS = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}
_ADAPTIVE_POOLS = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}
_AVG_POOL_FUNCTIONS = {F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3}
_ADAPTIVE_POOL_FUNCTIONS = {F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2,
                            F.adaptive_avg_pool3d: 3}
_CONV_FUNCTIONS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
_SCALINGS = {operator.mul, operator.truediv, torch.mul, torch.div}
_ADDS = {operator.add, operator.iadd, torch.add}
_SHAPE_FUNCTIONS = {torch.flatten, torch.cat, torch.reshape, operator.getitem, getattr,
                    torch.squeeze, torch.unsqueeze}
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


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


def _ntuple(value: Any, dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    return tuple(int(v) for v in value)


def _per_sample(t: torch.Tensor) -> int:
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
    if isinstance(module, _CONVS):
        k = math.prod(_ntuple(module.kernel_size, len(module.kernel_size)))
        return "conv", _per_sample(out) * (module.in_channels // module.groups) * k
    if isinstance(module, _CONV_TRANSPOSES):
        k = math.prod(module.kernel_size)
        return "conv", _per_sample(args[0]) * (module.out_channels // module.groups) * k
    if isinstance(module, nn.Linear):
        return "linear", _per_sample(out) * module.in_features
    if isinstance(module, _BATCHNORMS):
        return "batchnorm", _per_sample(out)
    for kind, dims in _AVG_POOLS.items():
        if isinstance(module, kind):
            return "avgpool", _per_sample(out) * math.prod(_ntuple(module.kernel_size, dims))
    for kind, dims in _ADAPTIVE_POOLS.items():
        if isinstance(module, kind):
            x = args[0]
            channels = x.shape[1] if x.dim() > dims + 1 else 1
            return "avgpool", channels * _adaptive_window_total(x.shape[-dims:], out.shape[-dims:])
    return None


def _function_cost(target: Any, args: tuple, kwargs: dict, out: Any) -> tuple[str, int] | None:
    if not isinstance(out, torch.Tensor):
        return None
    if target in _CONV_FUNCTIONS:
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        return "conv", _per_sample(out) * math.prod(weight.shape[1:])
    if target is F.linear:
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        return "linear", _per_sample(out) * weight.shape[-1]
    if target in _AVG_POOL_FUNCTIONS:
        dims = _AVG_POOL_FUNCTIONS[target]
        kernel = args[1] if len(args) > 1 else kwargs["kernel_size"]
        return "avgpool", _per_sample(out) * math.prod(_ntuple(kernel, dims))
    if target in _ADAPTIVE_POOL_FUNCTIONS:
        dims = _ADAPTIVE_POOL_FUNCTIONS[target]
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


def _module_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
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
    from .network import SpikingNetwork

    gm: fx.GraphModule | None
    if isinstance(model, SpikingNetwork):
        gm = model.network
    elif isinstance(model, fx.GraphModule):
        gm = model
    else:
        from .convert import UnsupportedLayerError, trace

        try:
            gm = trace(model)
        except UnsupportedLayerError:
            gm = None
    device, dtype = _module_device_dtype(model)
    x = torch.zeros(1, *input_shape, device=device, dtype=dtype)
    with _eval_mode(model), torch.inference_mode():
        if gm is None:
            return AnnCost(_hooked_costs(model, x))
        interpreter = _CostInterpreter(gm)
        interpreter.run(x)
    return AnnCost(interpreter.layers)


# --------------------------------------------------------------------------------------------
# Fan-out: the connectivity copy of the spiking graph
# --------------------------------------------------------------------------------------------


def _sum_pool(x: torch.Tensor, dims: int, kernel, stride, padding, ceil_mode: bool) -> torch.Tensor:
    """Average pooling that sums (divisor 1): every window element reaches its output once."""
    kernel = _ntuple(kernel, dims)
    stride = kernel if stride is None or stride == [] or stride == () else _ntuple(stride, dims)
    padding = _ntuple(padding, dims)
    if dims == 1:
        y = F.avg_pool2d(x.unsqueeze(-2), (1, *kernel), (1, *stride), (0, *padding), ceil_mode,
                         True, 1)
        return y.squeeze(-2)
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    return pool(x, kernel, stride, padding, ceil_mode, True, 1)


def _adaptive_sum_pool(x: torch.Tensor, dims: int, output_size) -> torch.Tensor:
    """Adaptive average pooling times each window's size (a sum over the window)."""
    pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[dims]
    y = pool(x, output_size)
    sizes_in, sizes_out = x.shape[-dims:], y.shape[-dims:]
    window = torch.ones((), dtype=x.dtype, device=x.device)
    for axis, (n_in, n_out) in enumerate(zip(sizes_in, sizes_out, strict=True)):
        lengths = torch.tensor(
            [math.ceil((i + 1) * n_in / n_out) - (i * n_in) // n_out for i in range(n_out)],
            dtype=x.dtype, device=x.device,
        )
        shape = [1] * dims
        shape[axis] = n_out
        window = window * lengths.view(shape)
    return y * window


class _Connectivity(fx.Interpreter):
    """The graph with every synapse weighing 1; IF neurons emit fresh leaf tensors.

    After :meth:`run`: ``leaves`` (IF name → its output leaf), ``targets`` (IF name → its input
    current, plus ``"output"`` for the graph output) and ``bias_elements`` (output elements of
    biased conv/linear layers: one bias accumulate each per step).
    """

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.leaves: dict[str, torch.Tensor] = {}
        self.targets: dict[str, torch.Tensor] = {}
        self.bias_elements = 0

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        module = self.fetch_attr(target)
        x = args[0] if args else None
        if isinstance(module, IFNeuron):
            x = input_current(args)  # a fused residual connection: both branches
            if target in self.targets:
                raise NotImplementedError(
                    f"IF neuron {target!r} is called more than once; operation counting needs "
                    "one call per neuron module"
                )
            self.targets[target] = x
            leaf = torch.zeros_like(x, requires_grad=True)
            self.leaves[target] = leaf
            return leaf
        if isinstance(module, _CONVS):
            out = module._conv_forward(x, torch.ones_like(module.weight, dtype=x.dtype), None)
        elif isinstance(module, _CONV_TRANSPOSES):
            out = type(module).forward(_OnesView(module, x.dtype), x)
        elif isinstance(module, nn.Linear):
            out = F.linear(x, torch.ones_like(module.weight, dtype=x.dtype))
        elif isinstance(module, (*_BATCHNORMS, nn.Identity, *_DROPOUTS)):
            return x
        elif type(module) in _AVG_POOLS:
            return _sum_pool(x, _AVG_POOLS[type(module)], module.kernel_size, module.stride,
                             module.padding, module.ceil_mode)
        elif type(module) in _ADAPTIVE_POOLS:
            return _adaptive_sum_pool(x, _ADAPTIVE_POOLS[type(module)], module.output_size)
        elif isinstance(module, (nn.Flatten, nn.Unflatten)):
            return module(x)
        else:
            raise NotImplementedError(
                f"operation counting does not know layer {target!r} ({type(module).__name__}); "
                "supported: Conv/ConvTranspose, Linear, BatchNorm, (adaptive) average pooling, "
                "Flatten/Unflatten, Identity, adds, constant scalings and reshapes"
            )
        if getattr(module, "bias", None) is not None:
            self.bias_elements += _per_sample(out)
        return out

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if target in _SCALINGS:
            signals = [t for t in tensors if t.requires_grad] or tensors
            if len(signals) != 1:
                raise NotImplementedError("operation counting: a product of two signals")
            return signals[0]
        if target in _ADDS:
            if len(tensors) == 1:
                return tensors[0]  # adding a constant: no synapse
            return tensors[0] + tensors[1]  # alpha ignored: each operand is one accumulate
        if target in _AVG_POOL_FUNCTIONS:
            dims = _AVG_POOL_FUNCTIONS[target]
            names = ("input", "kernel_size", "stride", "padding", "ceil_mode")
            given = {**dict(zip(names, args, strict=False)), **kwargs}
            return _sum_pool(given["input"], dims, given["kernel_size"], given.get("stride"),
                             given.get("padding", 0), given.get("ceil_mode", False))
        if target in _ADAPTIVE_POOL_FUNCTIONS:
            size = args[1] if len(args) > 1 else kwargs["output_size"]
            return _adaptive_sum_pool(args[0], _ADAPTIVE_POOL_FUNCTIONS[target], size)
        if target in _CONV_FUNCTIONS or target is F.linear:
            args = list(args)
            weight = args[1] if len(args) > 1 else kwargs.pop("weight")
            ones = torch.ones_like(weight, dtype=args[0].dtype)
            bias = args[2] if len(args) > 2 else kwargs.pop("bias", None)
            args = [args[0], ones, None, *args[3:]]
            out = target(*args, **kwargs)
            if bias is not None:
                self.bias_elements += _per_sample(out)
            return out
        if target is torch.mean:  # torch.mean(x, dims): a sum with unit weights
            dims = args[1] if len(args) > 1 else kwargs.get("dim")
            keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
            return args[0].sum(dim=dims, keepdim=keep)
        if target in _SHAPE_FUNCTIONS:
            return super().call_function(target, args, kwargs)
        raise NotImplementedError(
            f"operation counting does not know the operation {getattr(target, '__name__', target)}"
        )

    def call_method(self, target: str, args: tuple, kwargs: dict) -> Any:
        if target in ("add", "add_"):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            return tensors[0] if len(tensors) == 1 else tensors[0] + tensors[1]
        if target in ("mul", "mul_", "div", "div_"):
            return args[0]
        if target == "mean":  # global average pooling x.mean(dims): a sum with unit weights
            dims = args[1] if len(args) > 1 else kwargs.get("dim")
            keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
            return args[0].sum(dim=dims, keepdim=keep)
        if target in ("view", "reshape", "flatten", "size", "contiguous", "dim", "squeeze",
                      "unsqueeze"):
            return super().call_method(target, args, kwargs)
        raise NotImplementedError(f"operation counting does not know the method .{target}()")


class _OnesView:
    """Attribute view of a ConvTranspose module whose weight is all ones and bias absent."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        self._module = module
        self.weight = torch.ones_like(module.weight, dtype=dtype)
        self.bias = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def _fanouts(
    gm: fx.GraphModule, inputs: Sequence[Any], analog: Sequence[bool]
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor], _Connectivity]:
    """Fan-out of every leaf (IF outputs, analog inputs) into every target, as exact counts.

    Returns ``(fanout, analog_fanout, interpreter)``: ``fanout[source][target]`` is a tensor of
    the source's per-image shape; ``analog_fanout[placeholder index]`` the total fan-out of an
    analog body input that reaches synapses (dense values: one MAC per element and target).
    """
    leaves_in: dict[str, torch.Tensor] = {}
    prepared = []
    for index, (value, is_analog) in enumerate(zip(inputs, analog, strict=True)):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            with torch.inference_mode(False):
                value = torch.zeros(value.shape, dtype=value.dtype, device=value.device,
                                    requires_grad=bool(is_analog))
            if is_analog:
                leaves_in[f"input{index}"] = value
        prepared.append(value)
    interpreter = _Connectivity(gm)
    with torch.inference_mode(False), torch.enable_grad():
        out = interpreter.run(*prepared)
        items = out if isinstance(out, (tuple, list)) else [out]
        outputs = [o for o in items if isinstance(o, torch.Tensor)]
        targets = dict(interpreter.targets)
        for k, value in enumerate(outputs):
            targets["output" if k == 0 else f"output{k}"] = value
        leaves = {**interpreter.leaves, **leaves_in}
        names = list(leaves)
        fanout: dict[str, dict[str, torch.Tensor]] = {name: {} for name in interpreter.leaves}
        analog_fanout: dict[str, torch.Tensor] = {}
        for tname, value in targets.items():
            if not value.requires_grad:
                continue
            grads = torch.autograd.grad(value.sum(), [leaves[n] for n in names],
                                        retain_graph=True, allow_unused=True)
            for name, grad in zip(names, grads, strict=True):
                if grad is None:
                    continue
                grad = grad[0].detach().round()
                if not bool(grad.any()):
                    continue
                if name in fanout:
                    fanout[name][tname] = grad
                else:
                    analog_fanout[name] = analog_fanout.get(name, 0) + grad
    return fanout, analog_fanout, interpreter


def _counting_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def synaptic_fanout(module: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    """Fan-out of every element of the input of a linear ``module`` (conv, linear, pooling, …).

    The number of accumulates one spike at that position triggers in ``module``'s output, for
    one image (``input_shape`` excludes the batch). Average pooling sums (the pool folded into
    what follows). Used by :func:`network_fanout`; exposed for tests and analysis.
    """
    gm = module if isinstance(module, fx.GraphModule) else fx.symbolic_trace(module)
    device, _ = _module_device_dtype(module)
    x = torch.zeros(1, *input_shape, device=device, dtype=_counting_dtype(device))
    _, analog, _ = _fanouts(gm, [x], [True])
    if not analog:
        return torch.zeros(tuple(input_shape), device=device, dtype=x.dtype)
    return analog["input0"]


def count_synaptic_operations(spikes: torch.Tensor, fanout: torch.Tensor) -> int:
    """Σ over spike events (nonzero entries, any sign or size) of their fan-out.

    ``spikes``: ``[..., *fanout.shape]`` (any leading time/batch dimensions).
    """
    events = (spikes != 0).reshape(-1, fanout.numel()).sum(dim=0).to(torch.float64)
    return int(round(float(events @ fanout.reshape(-1).to(events.device, torch.float64))))


@dataclass
class _Source:
    """One IF layer's static counting data for one input shape."""

    neurons: int
    shape: tuple[int, ...]
    targets: list[str]
    matrix: torch.Tensor  # [N, len(targets)] fan-out into each target
    value: float
    negative_value: float | None
    _orders: dict = field(default_factory=dict)

    def ordered(self, order: tuple[int, ...]) -> torch.Tensor:
        """The fan-out matrix with rows in the memory order ``order`` of the layer's dims."""
        if order == tuple(range(len(self.shape))):
            return self.matrix
        if order not in self._orders:
            m = self.matrix.shape[1]
            self._orders[order] = self.matrix.view(*self.shape, m).permute(
                *order, len(self.shape)).reshape(-1, m).contiguous()
        return self._orders[order]


#: Rows per exact float32 batch sum: k·A summed over at most this many rows rounds back to k.
_EXACT_ROWS = 1024


def _memory_order(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``x`` ``[k, b, *dims]`` as a ``[k, b, N]`` view in memory order (no copy when possible),
    and the order of ``dims`` it follows (``(1, 2, 0)`` for channels-last ``C, H, W``)."""
    dims = list(range(x.dim() - 2))
    order = tuple(sorted(dims, key=lambda d: -x.stride(d + 2)))
    permuted = x.permute(0, 1, *(d + 2 for d in order))
    if permuted.is_contiguous():
        return permuted.reshape(x.shape[0], x.shape[1], -1), order
    return x.reshape(x.shape[0], x.shape[1], -1), tuple(dims)


def _event_counts(flat: torch.Tensor, source: _Source
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Spike events per neuron summed over the batch, ``[k, N]``, and negative events ``[k]``.

    On CPU in float32/float64 a matrix-vector product with ones sums the batch (one fast BLAS
    pass over the spikes): the column sum is ``A·n`` up to rounding far below ``A/2``, so
    ``round(sum / A)`` is the exact count ``n``; signed neurons add a pass over ``|x|``
    (``n₊ = (Σ|x| + Σx)/2A``, ``n₋ = (Σ|x| − Σx)/2A₋``). Elsewhere (GPU, half precision):
    ``(x != 0).sum``.
    """
    k, b, _ = flat.shape
    if flat.device.type != "cpu" or flat.dtype not in (torch.float32, torch.float64):
        events = flat.ne(0).sum(dim=1)
        negative = None if source.negative_value is None else flat.lt(0).sum(dim=(1, 2))
        return events, negative

    def batch_sum(values: torch.Tensor) -> torch.Tensor:
        total = None
        for start in range(0, b, _EXACT_ROWS):
            part = values[:, start:start + _EXACT_ROWS]
            ones = part.new_ones(k, 1, part.shape[1])
            summed = torch.bmm(ones, part).squeeze(1)  # [k, N]
            total = summed if total is None else total + summed
        return total

    def nearest(values: torch.Tensor, scale: float) -> torch.Tensor:
        # ⌊v/A + ½⌋ (v >= 0) by an integer cast: torch.round/floor take a parallel path that
        # stalls for milliseconds on a loaded CPU, the cast does not
        return values.mul_(1.0 / scale).add_(0.5).to(torch.int32)

    plain = batch_sum(flat)
    if source.negative_value is None:
        return nearest(plain, source.value), None
    absolute = batch_sum(flat.abs())
    positive = nearest(absolute + plain, 2 * source.value)
    negative = nearest(absolute.sub_(plain), 2 * source.negative_value)
    return positive.add_(negative), negative.sum(dim=1)


@dataclass
class _Static:
    """Everything about one input shape that does not depend on the spikes."""

    sources: dict[str, _Source]
    ann: AnnCost
    prefix_macs: int
    analog_macs_per_step: int
    bias_per_step: int
    ann_macs_into: dict[str, int]


def _dynamic_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    dynamic: set[fx.Node] = set()
    for node in gm.graph.nodes:
        is_neuron = node.op == "call_module" and isinstance(gm.get_submodule(node.target),
                                                            IFNeuron)
        if is_neuron or (node.op in ("call_module", "call_function", "call_method")
                         and any(arg in dynamic for arg in node.all_input_nodes)):
            dynamic.add(node)
    return dynamic


def _first_target(gm: fx.GraphModule, node: fx.Node) -> str:
    """The IF neuron (or ``"output"``) that ``node``'s result flows into first."""
    frontier, seen = [node], {node}
    while frontier:
        following = []
        for n in frontier:
            for user in n.users:
                if user.op == "output":
                    return "output"
                if user.op == "call_module" and isinstance(gm.get_submodule(user.target),
                                                           IFNeuron):
                    return user.target
                if user not in seen:
                    seen.add(user)
                    following.append(user)
        frontier = following
    return "output"


def _build_static(snn: SpikingNetwork, sample_shape: Sequence[int],
                  device: torch.device) -> _Static:
    gm = snn.network
    ann = ann_operations(snn, sample_shape)
    dynamic_names = {n.name for n in _dynamic_nodes(gm)}
    nodes = {n.name: n for n in gm.graph.nodes}
    prefix_macs = sum(layer.macs for layer in ann.layers if layer.name not in dynamic_names)
    ann_macs_into: dict[str, int] = {}
    for layer in ann.layers:
        target = _first_target(gm, nodes[layer.name]) if layer.name in nodes else "output"
        ann_macs_into[target] = ann_macs_into.get(target, 0) + layer.macs
    split = snn.split
    dtype = _counting_dtype(device)
    x = torch.zeros(1, *sample_shape, device=device, dtype=dtype)
    with torch.no_grad():
        constants = _run_double(split.prefix, x)
    analog = [not only for only in split.neuron_only]
    fanout, analog_fanout, interpreter = _fanouts(split.body, constants, analog)
    neurons = snn.neurons()
    sources = {}
    for name, neuron in neurons.items():
        targets = fanout.get(name, {})
        leaf = interpreter.leaves.get(name)
        shape = () if leaf is None else tuple(leaf.shape[1:])
        n = math.prod(shape) if shape else 0
        names = list(targets)
        matrix = (torch.stack([targets[t].reshape(-1) for t in names], dim=1).to(dtype)
                  if names else torch.zeros(n, 0, device=device, dtype=dtype))
        negative = neuron.negative[1] if neuron.negative is not None else None
        sources[name] = _Source(n, shape, names, matrix, neuron.spike_value(), negative)
    analog_macs = int(sum(float(v.sum()) for v in analog_fanout.values()))
    return _Static(sources, ann, prefix_macs, analog_macs, interpreter.bias_elements,
                   ann_macs_into)


def _run_double(prefix: fx.GraphModule, x: torch.Tensor) -> tuple:
    """The prefix's outputs for a zero image, cast to the counting dtype (shapes are all we use)."""
    param_dtype = _module_device_dtype(prefix)[1]
    out = prefix(x.to(param_dtype))
    out = out if isinstance(out, tuple) else (out,)
    return tuple(v.to(x.dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                 for v in out)


def network_fanout(snn: SpikingNetwork, input_shape: Sequence[int]) -> dict[str, torch.Tensor]:
    """Total fan-out of every neuron of every IF layer of ``snn`` for images of ``input_shape``.

    ``{IF name: tensor of the layer's per-image shape}``: how many synaptic accumulates one
    spike of that neuron triggers (into the next IF layers and the output layer).
    """
    device = next((p.device for p in snn.parameters()), torch.device("cpu"))
    static = _build_static(snn, input_shape, device)
    return {name: source.matrix.sum(dim=1).view(source.shape)
            for name, source in static.sources.items()}


# --------------------------------------------------------------------------------------------
# Counting spikes during simulation
# --------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """Accumulators of one simulated run length (one per T for horizon-dependent methods)."""

    frames: int
    samples: int = 0
    ann_macs: float = 0.0
    prefix_macs: float = 0.0
    analog_macs_per_step: float = 0.0
    bias_per_step: float = 0.0
    neurons: dict[str, float] = field(default_factory=dict)
    ann_macs_into: dict[str, float] = field(default_factory=dict)
    ann_by_kind: dict[str, float] = field(default_factory=dict)
    events: dict[str, torch.Tensor] = field(default_factory=dict)  # [frames]
    negative: dict[str, torch.Tensor] = field(default_factory=dict)  # [frames]
    sops: dict[str, torch.Tensor] = field(default_factory=dict)  # [frames, targets]


class OperationCounter:
    """Counts spike events and synaptic operations while an SNN is simulated.

    ::

        counter = OperationCounter(snn)
        with counter:                          # hooks on every IF neuron
            for x, y in batches:
                counter.begin(x, steps)        # before each simulate() call
                simulate(snn, x, steps)
        report = counter.report([1, 2, 4])     # OperationReport

    :func:`spikebridge.evaluate` does this by default (``count_operations=True``). Fan-outs are
    computed once per input shape. Per step and per IF layer the hook adds one
    ``count_nonzero`` over the batch and a small matrix product; the spike tensors themselves are
    never copied.
    """

    def __init__(self, snn: SpikingNetwork, energy: EnergyModel | None = None) -> None:
        self.snn = snn
        self.energy = energy or EnergyModel()
        self._static: dict[tuple, _Static] = {}
        self._runs: dict[int, _Run] = {}
        self._current: tuple[_Static, _Run] | None = None
        self._next_step: dict[str, int] = {}
        self._checked: set[str] = set()
        self._handles: list = []
        self._device: torch.device | None = None
        self.seconds = 0.0  # wall time spent in the hooks (counting proper)
        self.setup_seconds = 0.0  # fan-outs and MACs, once per input shape

    # hooks ---------------------------------------------------------------------------------
    def __enter__(self) -> OperationCounter:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def attach(self) -> None:
        """Register a forward hook on every IF neuron (idempotent)."""
        if self._handles:
            return
        for name, neuron in self.snn.neurons().items():
            self._handles.append(neuron.register_forward_hook(
                lambda _m, _args, out, name=name: self._observe(name, out)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._current = None

    def begin(self, x: torch.Tensor, steps: int, key: int | None = None) -> None:
        """Announce a ``simulate(snn, x, steps)`` call: its spikes go to run ``key`` (``steps``)."""
        shape = tuple(x.shape[1:])
        device = x.device
        if self._device is not None and device != self._device:
            self._static.clear()
        self._device = device
        if shape not in self._static:
            start = time.perf_counter()
            self._static[shape] = _build_static(self.snn, shape, device)
            self.setup_seconds += time.perf_counter() - start
        static = self._static[shape]
        key = int(steps if key is None else key)
        frames = self.snn.frames_needed(int(steps))
        run = self._runs.get(key)
        if run is None:
            run = self._runs[key] = _Run(frames)
        b = int(x.shape[0])
        run.samples += b
        run.ann_macs += static.ann.total * b
        for kind, macs in static.ann.by_kind().items():
            run.ann_by_kind[kind] = run.ann_by_kind.get(kind, 0.0) + macs * b
        run.prefix_macs += static.prefix_macs * b
        run.analog_macs_per_step += static.analog_macs_per_step * b
        run.bias_per_step += static.bias_per_step * b
        for name, source in static.sources.items():
            run.neurons[name] = run.neurons.get(name, 0.0) + source.neurons * b
        for target, macs in static.ann_macs_into.items():
            run.ann_macs_into[target] = run.ann_macs_into.get(target, 0.0) + macs * b
        self._current = (static, run)
        self._next_step = dict.fromkeys(static.sources, 0)

    def _observe(self, name: str, out: torch.Tensor) -> None:
        if self._current is None:
            return
        start = time.perf_counter()
        self._count(name, out)
        self.seconds += time.perf_counter() - start

    def _count(self, name: str, out: torch.Tensor) -> None:
        static, run = self._current
        source = static.sources[name]
        context = _neurons._SEQUENCE[-1] if _neurons._SEQUENCE else None
        if context is not None and out.shape[0] == context.steps * context.batch_size:
            k, b, t0 = context.steps, context.batch_size, 0
        else:
            k, b, t0 = 1, out.shape[0], self._next_step[name]
        self._next_step[name] = t0 + k
        if name not in self._checked:
            self._check_values(name, out, source)
        flat, order = _memory_order(out.view(k, b, *out.shape[1:]))
        events, negative = _event_counts(flat, source)  # [k, N] (memory order), [k] or None
        dtype = source.matrix.dtype
        events = events.to(dtype)
        if name not in run.events:
            run.events[name] = torch.zeros(run.frames, device=out.device, dtype=dtype)
            run.sops[name] = torch.zeros(run.frames, len(source.targets), device=out.device,
                                         dtype=dtype)
            if source.negative_value is not None:
                run.negative[name] = torch.zeros(run.frames, device=out.device, dtype=dtype)
        if t0 + k > run.frames:  # more frames than announced: grow
            self._grow(run, t0 + k)
        run.events[name][t0:t0 + k] += events.sum(dim=1)
        if source.targets:
            run.sops[name][t0:t0 + k] += events @ source.ordered(order)
        if negative is not None:
            run.negative[name][t0:t0 + k] += negative.to(dtype)

    @staticmethod
    def _grow(run: _Run, frames: int) -> None:
        def pad(t: torch.Tensor) -> torch.Tensor:
            extra = t.new_zeros((frames - t.shape[0], *t.shape[1:]))
            return torch.cat([t, extra])

        for store in (run.events, run.negative, run.sops):
            for key in store:
                store[key] = pad(store[key])
        run.frames = frames

    def _check_values(self, name: str, out: torch.Tensor, source: _Source) -> None:
        """Every nonzero output must be one spike (+A or -A₋): never count graded values as 1."""
        allowed = out.eq(0) | out.eq(source.value)
        if source.negative_value is not None:
            allowed |= out.eq(-source.negative_value)
        if not bool(allowed.all()):
            bad = out[~allowed].flatten()[:3].tolist()
            raise ValueError(
                f"IF layer {name!r} emitted values {bad} that are not single spikes "
                f"(0, {source.value:g}" + ("" if source.negative_value is None else
                                          f", -{source.negative_value:g}") +
                "); operation counting would miscount graded (multi-bit) outputs"
            )
        self._checked.add(name)

    def sum_over_processes(self) -> None:
        """Replace every count by its sum over the processes of a multi-process run (each
        counted its own share of the images), so :meth:`report` covers the whole set. Call it
        in every process after the last batch; it does nothing in a single process."""
        from . import distributed

        if distributed.world_size() == 1:
            return
        for key in sorted(self._runs):
            run = self._runs[key]
            groups = (run.neurons, run.ann_macs_into, run.ann_by_kind)
            scalars = [run.samples, run.ann_macs, run.prefix_macs, run.analog_macs_per_step,
                       run.bias_per_step] + [g[k] for g in groups for k in sorted(g)]
            summed = distributed.all_reduce_sum(torch.tensor(scalars, dtype=torch.float64))
            values = summed.tolist()
            (samples, run.ann_macs, run.prefix_macs, run.analog_macs_per_step,
             run.bias_per_step), rest = values[:5], iter(values[5:])
            run.samples = int(samples)
            for group in groups:
                for name in sorted(group):
                    group[name] = next(rest)
            for store in (run.events, run.negative, run.sops):
                for name in sorted(store):
                    store[name] = distributed.all_reduce_sum(store[name])

    # results -------------------------------------------------------------------------------
    def report(self, steps: Sequence[int] | int, per_horizon: bool | None = None
               ) -> OperationReport:
        """Operation counts and energy per image at each ``T`` in ``steps``.

        ``per_horizon``: whether each ``T`` had its own run (``begin(x, T)`` for every T); by
        default inferred (a run recorded for every requested T).
        """
        step_list = sorted({int(t) for t in ([steps] if isinstance(steps, int) else steps)})
        if not self._runs:
            raise ValueError("no simulation was recorded (call begin() before simulate())")
        if per_horizon is None:
            per_horizon = len(self._runs) > 1
        horizon_key = max(self._runs)
        per_t: dict[int, dict[str, Any]] = {}
        layers: dict[str, dict[str, dict[str, float]]] = {}
        for t in step_list:
            key = t if per_horizon else horizon_key
            if key not in self._runs:
                raise ValueError(f"no run was recorded for T={t}")
            if t > self._runs[key].frames and not per_horizon:
                raise ValueError(f"T={t} exceeds the {self._runs[key].frames} simulated frames")
            totals, per_layer = self._at(self._runs[key], t)
            per_t[t] = totals
            for name, values in per_layer.items():
                layers.setdefault(name, {})[str(t)] = values
        run = self._runs[horizon_key]
        static = next(iter(self._static.values()))
        per_step = self._per_step(run)
        ann_layers = {layer.name: {"kind": layer.kind, "macs": layer.macs,
                                   "into": self._target_of(layer.name)}
                      for layer in static.ann.layers} if len(self._static) == 1 else {}
        return OperationReport(
            per_T=per_t, layers=layers, per_step=per_step,
            conventions={**self.energy.conventions(), **self._cos_conventions()},
            ann_layers=ann_layers,
            seconds={"counting": self.seconds, "setup": self.setup_seconds},
        )

    def _target_of(self, layer: str) -> str:
        gm = self.snn.network
        nodes = {n.name: n for n in gm.graph.nodes}
        return _first_target(gm, nodes[layer]) if layer in nodes else "output"

    def _calibrating(self) -> dict[str, tuple[int, int]]:
        """IF layers that pre-simulate: name → (frames read ρ, passes over them)."""
        found = {}
        for name, neuron in self.snn.neurons().items():
            calibration = neuron.calibration
            if calibration is None:
                continue
            frames = int(calibration.frames_read())
            if frames <= 0:
                continue
            steps = getattr(calibration, "presimulation_steps", None)
            passes = int(steps()) // frames if callable(steps) else 1
            found[name] = (frames, passes)
        return found

    def _cos_conventions(self) -> dict[str, Any]:
        calibrating = self._calibrating()
        if not calibrating:
            return {}
        frames, passes = next(iter(calibrating.values()))
        return {"presimulation": (
            f"each calibrating layer replays its first {frames} input frames {passes} time(s) "
            "before its real run; every pass re-delivers those frames' spikes (their SOPs into "
            "that layer counted again); the pre-simulation's own output spikes go nowhere")}

    def _into(self, run: _Run) -> dict[str, torch.Tensor]:
        """SOPs into each target per frame, summed over sources: ``{target: [frames]}``."""
        static = next(iter(self._static.values()))
        into: dict[str, torch.Tensor] = {}
        for name, sops in run.sops.items():
            for j, target in enumerate(static.sources[name].targets):
                into[target] = into.get(target, 0) + sops[:, j]
        return into

    def _at(self, run: _Run, t: int) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
        n = max(run.samples, 1)
        into = {k: v.double().cpu() for k, v in self._into(run).items()}
        calibrating = self._calibrating()
        inference = presim = 0.0
        for target, per_frame in into.items():
            inference += float(per_frame[:t].sum())
            if target in calibrating:
                frames, passes = calibrating[target]
                # frames beyond T still run when T < ρ: the layer reads ρ frames
                inference += float(per_frame[t:frames].sum())
                presim += passes * float(per_frame[:frames].sum())
        frames_presented = max(t, max((f for f, _ in calibrating.values()), default=0))
        pre_steps = int(self.snn.method.presimulation_steps())
        first_multiplier = 1 if self.energy.first_layer == "once" else frames_presented + pre_steps
        first_macs = run.prefix_macs / n * first_multiplier
        analog_macs = run.analog_macs_per_step / n * frames_presented
        bias = run.bias_per_step / n * frames_presented
        sops = (inference + presim) / n
        ann_macs = run.ann_macs / n
        snn_macs = first_macs + analog_macs
        e_ann = self.energy.mac_pj * ann_macs
        e_snn = self.energy.mac_pj * snn_macs + self.energy.ac_pj * (
            sops + (bias if self.energy.count_bias else 0.0))
        spikes = sum(float(v[:t].sum()) for v in run.events.values()) / n
        neurons = sum(run.neurons.values()) / n
        totals = {
            "snn_sops": sops,
            "snn_sops_inference": inference / n,
            "snn_sops_presimulation": presim / n,
            "snn_first_layer_macs": snn_macs,
            "ann_macs": ann_macs,
            "sops_per_mac": sops / ann_macs if ann_macs else None,
            "energy_pj": {"snn": e_snn, "ann": e_ann},
            "ratio": e_snn / e_ann if e_ann else None,
            "spikes": spikes,
            "firing_rate": spikes / (neurons * t) if neurons else 0.0,
            "bias_acs": bias,
        }
        per_layer: dict[str, dict[str, float]] = {}
        for name, events in run.events.items():
            count = float(events[:t].sum()) / n
            size = run.neurons.get(name, 0.0) / n
            entry = {"spikes": count, "firing_rate": count / (size * t) if size else 0.0,
                     "sops_out": float(run.sops[name][:t].sum()) / n}
            if name in run.negative:
                entry["negative_spikes"] = float(run.negative[name][:t].sum()) / n
            per_layer[name] = entry
        for target, per_frame in into.items():
            entry = per_layer.setdefault(target, {})
            # the frames this layer really computes, as the totals count them: a calibrating
            # layer at T < ρ runs ρ frames; its pre-simulation replays are their own part
            real = max(t, calibrating[target][0]) if target in calibrating else t
            entry["sops_in"] = float(per_frame[:real].sum()) / n
            if target in calibrating:
                frames, passes = calibrating[target]
                entry["sops_in_presimulation"] = passes * float(per_frame[:frames].sum()) / n
        for target, macs in run.ann_macs_into.items():
            per_layer.setdefault(target, {})["ann_macs_in"] = macs / n
        return totals, per_layer

    def _per_step(self, run: _Run) -> list[float]:
        n = max(run.samples, 1)
        total = None
        for sops in run.sops.values():
            per_frame = sops.sum(dim=1)
            total = per_frame if total is None else total + per_frame
        if total is None:
            return [0.0] * run.frames
        return [v / n for v in total.double().cpu().tolist()]


@dataclass
class OperationReport:
    """Operation counts and energy per image of one evaluation (:class:`OperationCounter`).

    ``per_T[T]``: ``snn_sops`` (inference + COS pre-simulation), ``snn_sops_inference``,
    ``snn_sops_presimulation``, ``snn_first_layer_macs`` (analog MACs under the first-layer
    convention), ``ann_macs``, ``sops_per_mac``, ``energy_pj`` (``snn``, ``ann``), ``ratio``
    (:math:`E_{SNN}/E_{ANN}`), ``spikes``, ``firing_rate``, ``bias_acs``.
    ``layers[name][T]``: ``spikes``, ``firing_rate``, ``sops_out`` (caused by this IF layer's
    spikes), ``sops_in`` (received by this layer; also for ``"output"``), ``ann_macs_in``.
    ``per_step``: SOPs at each simulated step of the longest run (pre-simulation excluded).
    """

    per_T: dict[int, dict[str, Any]]
    layers: dict[str, dict[str, dict[str, float]]]
    per_step: list[float]
    conventions: dict[str, Any]
    ann_layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def overhead(self, simulation_seconds: float) -> float | None:
        """Simulation time with counting over without: ``s / (s − counting − setup)``.

        ``simulation_seconds`` is the measured time including counting (``snn_seconds``).
        On CPU the hooks run synchronously, so this is the overhead measured in one run; on a
        GPU the hooks only enqueue kernels and the figure is a lower bound.
        """
        spent = self.seconds.get("counting", 0.0) + self.seconds.get("setup", 0.0)
        if simulation_seconds <= spent:
            return None
        return simulation_seconds / (simulation_seconds - spent)

    def to_dict(self) -> dict[str, Any]:
        return {"per_T": {str(t): v for t, v in self.per_T.items()}, "layers": self.layers,
                "per_step": self.per_step, "conventions": self.conventions,
                "ann_layers": self.ann_layers,
                "seconds": {k: round(v, 4) for k, v in self.seconds.items()}}

    def ops_record(self, steps: Sequence[int] | None = None) -> dict[str, dict[str, Any]]:
        """``{"T": per-T totals}`` for the requested ``steps`` (all by default)."""
        keys = self.per_T if steps is None else [int(t) for t in steps]
        return {str(t): self.per_T[t] for t in keys}


@contextmanager
def record_operations(
    counter: OperationCounter | None, x: torch.Tensor, steps: int
) -> Iterator[None]:
    """Count the spikes of one ``simulate(snn, x, steps)`` call made inside this context.

    Hooks are attached for the call only (removed even if it fails); ``counter=None`` does
    nothing (counting switched off).
    """
    if counter is None:
        yield
        return
    counter.attach()
    try:
        counter.begin(x, steps)
        yield
    finally:
        counter.detach()


def ops_from_mapping(record: Mapping[str, Any], t: int | str) -> dict[str, Any] | None:
    """The per-T operation totals of a result record, or ``None`` if it has none."""
    ops = record.get("ops")
    if not ops:
        return None
    return ops.get(str(t))


# --------------------------------------------------------------------------------------------
# Result records, tables and plots
# --------------------------------------------------------------------------------------------

#: CSV columns added by :func:`csv_values` (one row per method and T).
CSV_COLUMNS = ("snn_sops", "snn_sops_presimulation", "snn_first_layer_macs", "ann_macs",
               "sops_per_mac", "energy_snn_pj", "energy_ann_pj", "energy_ratio", "firing_rate")


def record_fields(operations: OperationReport | None, steps: Sequence[int]) -> dict[str, Any]:
    """``{"ops": {T: totals}, "operations": {...}}`` for a result record (empty if not counted).

    ``ops[T]``: ``snn_sops``, ``snn_first_layer_macs``, ``ann_macs``, ``sops_per_mac``,
    ``energy_pj`` (``snn``, ``ann``), ``ratio`` and the breakdown of :class:`OperationReport`;
    ``operations``: conventions, per-layer counts per T, SOPs per step, ANN MACs per layer.
    """
    if operations is None:
        return {}
    wanted = [int(t) for t in steps]
    details = operations.to_dict()
    details["layers"] = {name: {str(t): per_t[str(t)] for t in wanted if str(t) in per_t}
                         for name, per_t in details["layers"].items()}
    del details["per_T"]
    return {"ops": operations.ops_record(wanted), "operations": details}


def csv_values(record: Mapping[str, Any], t: int | str) -> list[str]:
    """The :data:`CSV_COLUMNS` of ``record`` at ``T = t`` (empty strings if not counted)."""
    ops = ops_from_mapping(record, t)
    if ops is None:
        return [""] * len(CSV_COLUMNS)

    def fmt(value: Any) -> str:
        if value is None:
            return ""
        return f"{value:.6g}" if isinstance(value, float) and not float(value).is_integer() \
            else f"{value:.0f}"

    return [fmt(ops["snn_sops"]), fmt(ops["snn_sops_presimulation"]),
            fmt(ops["snn_first_layer_macs"]), fmt(ops["ann_macs"]),
            fmt(ops["sops_per_mac"]), fmt(ops["energy_pj"]["snn"]), fmt(ops["energy_pj"]["ann"]),
            fmt(ops["ratio"]), fmt(ops["firing_rate"])]


def _label(record: Mapping[str, Any]) -> str:
    from .reporting import _label as label

    return label(dict(record))


def format_energy_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Console table: per method, SOPs per image, SOPs per ANN MAC and E_SNN/E_ANN at each T."""
    counted = [rec for rec in records if rec.get("ops")]
    if not counted:
        return ""
    steps = list(dict.fromkeys(t for rec in counted for t in rec["ops"]))
    width = max(24, *(len(_label(rec)) + 14 for rec in counted))
    lines = [f"{'':<{width}}" + "".join(f"{'T=' + t:>9}" for t in steps)]
    rows = (("SOPs (M)", lambda o: o["snn_sops"] / 1e6),
            ("SOPs/MAC", lambda o: o["sops_per_mac"]),
            ("E SNN/ANN", lambda o: o["ratio"]))
    for rec in counted:
        for name, value in rows:
            row = f"{_label(rec) + '  ' + name:<{width}}"
            for t in steps:
                ops = rec["ops"].get(t)
                number = None if ops is None else value(ops)
                row += f"{'-':>9}" if number is None else f"{number:>9.3g}"
            lines.append(row)
        latency = rec.get("latency", {})
        frames = {t: latency.get(t, {}).get("frames_per_layer") for t in steps}
        if any(f is not None and str(f) != t for t, f in frames.items()):
            # COS: what every layer computes, ρ·iterations + max(T, ρ), is not T
            lines.append(f"{_label(rec) + '  frames/layer':<{width}}" + "".join(
                f"{'-' if frames[t] is None else frames[t]:>9}" for t in steps))
    first = counted[0]["ops"][next(iter(counted[0]["ops"]))]
    conv = counted[0].get("operations", {}).get("conventions", {})
    lines.append(
        f"per image; ANN: {first['ann_macs'] / 1e6:.4g} M MACs = "
        f"{first['energy_pj']['ann'] / 1e6:.4g} µJ ({conv.get('mac_pj', MAC_PJ_45NM)} pJ/MAC, "
        f"{conv.get('ac_pj', AC_PJ_45NM)} pJ/AC); SNN first layer counted "
        f"{'once' if conv.get('first_layer', 'once') == 'once' else 'at every step'}"
        + ("; COS pre-simulation included" if any(rec["method"] == "cos" for rec in counted)
           else "") + " (docs/energy.md)")
    return "\n".join(lines)


def plot_accuracy_vs_energy(records: Sequence[Mapping[str, Any]], path) -> Any:
    """Accuracy vs SNN energy per image (log axis), one curve per method (and model), points
    labelled with T — points of equal cost share one label (COS at every T ≤ ρ computes the same
    frames) — and each model's ANN as a marker at its own energy (ECC paper Fig. 3 style)."""
    from .reporting import _pyplot, _save_figure, plot_title, series_label

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    anns: dict[str, tuple[float, float]] = {}
    colors: dict[str, str] = {}
    same_cost = False
    for rec in records:
        ops = rec.get("ops") or {}
        steps = [t for t in rec["snn_accuracy"] if t in ops]
        if not steps:
            continue
        energy = [ops[t]["energy_pj"]["snn"] / 1e6 for t in steps]
        accuracy = [rec["snn_accuracy"][t] * 100 for t in steps]
        (line,) = ax.plot(energy, accuracy, marker="o", label=series_label(rec, records))
        colors.setdefault(rec["model"], line.get_color())
        # one label for points that would print on top of each other (within 4 % in energy
        # and 1.5 points in accuracy); equal cost is flagged below
        groups: list[list[int]] = []
        for i, e in enumerate(energy):
            near = next((g for g in groups if abs(math.log(energy[g[0]] / e)) < 0.04
                         and abs(accuracy[g[0]] - accuracy[i]) < 1.5), None)
            near.append(i) if near is not None else groups.append([i])
        for members in groups:
            top = max(members, key=lambda i: accuracy[i])
            text = "T=" + ",".join(steps[i] for i in members)
            same_cost |= len(members) > 1 and max(energy[i] for i in members) <= 1.001 * min(
                energy[i] for i in members)
            ax.annotate(text, (energy[top], accuracy[top]), textcoords="offset points",
                        xytext=(4, 4 if len(members) == 1 else -11), fontsize=7,
                        color=line.get_color())
        if rec.get("ann_accuracy") is not None:
            anns.setdefault(rec["model"], (ops[steps[0]]["energy_pj"]["ann"] / 1e6,
                                           rec["ann_accuracy"] * 100))
    markers = ("*", "P", "X", "D")
    for k, (model, (e, a)) in enumerate(anns.items()):
        one = len(anns) == 1
        ax.plot([e], [a], marker=markers[k % len(markers)], markersize=12 if one else 9,
                color="black" if one else colors.get(model, "black"),
                markeredgecolor="black", linestyle="none",
                label=f"{'ANN' if one else 'ANN ' + model} ({a:.2f}%)")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    low, high = ax.get_xlim()

    def minor(v: float, _pos: int) -> str:  # 2 and 5 of each decade: readable, never crowded
        lead = round(v / 10 ** math.floor(math.log10(v)), 6) if v > 0 else 0
        return f"{v:g}" if lead in (2.0, 5.0) else ""

    ax.xaxis.set_minor_formatter(FuncFormatter(minor) if high / low < 1e4 else NullFormatter())
    ax.tick_params(axis="x", which="both", labelsize=8)
    ax.set_xlabel("energy per image (µJ, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(plot_title(records, "accuracy vs energy"), fontsize=10)
    if same_cost:
        fig.text(0.01, -0.02, "Points sharing a label and an energy cost the same: COS "
                 "computes ρ·iterations + ρ frames per layer at every T ≤ ρ (docs/energy.md).",
                 fontsize=7, va="top")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside, not over
    out = _save_figure(fig, path)
    plt.close(fig)
    return out


def plot_layer_operations(runs: Mapping[str, Mapping[str, Any]], t: int | str, path) -> Any:
    """Per IF layer: firing rate and synaptic operations received, one bar group per run.

    ``runs``: ``{label: record}`` (records with ``operations``); ``t``: the T to show.
    """
    from .reporting import _pyplot, _save_figure

    plt = _pyplot()
    t = str(t)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 5.6), constrained_layout=True)
    labels = list(runs)
    first = runs[labels[0]]["operations"]["layers"]
    sources = [name for name, per_t in first.items() if "firing_rate" in per_t.get(t, {})]
    targets = [name for name, per_t in first.items() if "sops_in" in per_t.get(t, {})]
    width = 0.8 / len(labels)
    for j, label in enumerate(labels):
        layers = runs[label]["operations"]["layers"]
        offset = (j - (len(labels) - 1) / 2) * width
        top.bar([i + offset for i in range(len(sources))],
                [layers[n][t]["firing_rate"] for n in sources], width, label=label)
        real = [layers[n][t]["sops_in"] / 1e6 for n in targets]
        replay = [layers[n][t].get("sops_in_presimulation", 0.0) / 1e6 for n in targets]
        bars = bottom.bar([i + offset for i in range(len(targets))], real, width, label=label)
        if any(replay):  # COS: the pre-simulation replays, stacked and hatched
            bottom.bar([i + offset for i in range(len(targets))], replay, width, bottom=real,
                       color=bars.patches[0].get_facecolor(), alpha=0.45, hatch="//",
                       label=f"{label}: pre-simulation")
    macs = [first[n][t].get("ann_macs_in", 0) / 1e6 for n in targets]
    bottom.plot(range(len(targets)), macs, "k_", markersize=18, label="ANN MACs")
    top.set_xticks(range(len(sources)), sources, rotation=30, fontsize=7)
    bottom.set_xticks(range(len(targets)), targets, rotation=30, fontsize=7)
    top.set_ylabel("spikes / neuron / step")
    bottom.set_ylabel("SOPs received (M / image)")
    top.set_title(f"firing rate per IF layer (T = {t})", fontsize=10)
    bottom.set_title(f"synaptic operations per layer (T = {t}; COS: its real frames, ρ at least, "
                     "and its pre-simulation replays hatched; the bars sum to the total)",
                     fontsize=9)
    top.legend(fontsize=8)
    bottom.legend(fontsize=8)
    out = _save_figure(fig, path)
    plt.close(fig)
    return out


def iteration_operations(
    ann: nn.Module, batches, steps: int, iterations: Sequence[int], *, rho: int = 4,
    energy: EnergyModel | None = None, progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Operation counts of plain QCFS (0 iterations) and COS with each iteration count at T.

    ``{label: {"method", "params", "snn_accuracy", "ops", "operations"}}`` — what
    ``spikebridge analyse`` plots per layer (:func:`plot_layer_operations`).
    """
    from .convert import convert
    from .evaluation import evaluate

    batches = list(batches)
    runs: dict[str, dict[str, Any]] = {}
    for k in iterations:
        snn = convert(ann, "qcfs") if k == 0 else convert(ann, "cos", rho=rho, iterations=k)
        label = "qcfs (no calibration)" if k == 0 else f"cos ρ={rho}, {k} iteration(s)"
        result = evaluate(snn, batches, [steps], mode="layer" if k else "auto",
                          progress=progress, description=f"operations: {label}", energy=energy)
        runs[label] = {"method": snn.method.name, "params": snn.method.params(),
                       "snn_accuracy": {str(steps): result.snn_accuracy[steps]},
                       **record_fields(result.operations, [steps])}
    return runs
