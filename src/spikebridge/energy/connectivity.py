r"""Fan-out: how many synaptic accumulates one spike of each neuron triggers (docs/methods.md §8.2).

A copy of the spiking body in which every synapse weighs 1 (all-ones convolutions and linears
without bias, sum- instead of average-pooling, constant scalings and BatchNorm as identities) and
every IF neuron emits a fresh leaf tensor: the gradient of the sum of the next neurons' inputs
with respect to a leaf element is its fan-out — border-aware, with stride, padding (and its
mode), dilation and groups honoured, and average pooling folded into the next layer's
connectivity. Pooling's own additions are not counted (§8.2's convention).

With event input (``simulate(..., input="sequence")``) the input is spikes too: an event at
input element :math:`j` triggers :math:`\mathrm{fanout}_{in}(j)` accumulates in the first
synaptic layers — the convolutions / linears that read the input directly (through pooling or
reshapes at most) — counted the same way, border-aware (:func:`input_event_fanout`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..network import SpikingNetwork, is_neuron_node, time_dependent_nodes
from ..neurons import IFNeuron, input_current
from ..spiking_maxpool import SpikingMaxPool2d
from .macs import (
    ADAPTIVE_POOL_FUNCTIONS,
    ADAPTIVE_POOL_MODULES,
    ADD_FUNCTIONS,
    AVG_POOL_FUNCTIONS,
    AVG_POOL_MODULES,
    BATCHNORM_MODULES,
    CONV_FUNCTIONS,
    CONV_MODULES,
    CONV_TRANSPOSE_MODULES,
    DROPOUT_MODULES,
    SCALING_FUNCTIONS,
    SHAPE_FUNCTIONS,
    AnnCost,
    ann_operations,
    module_device_dtype,
    ntuple,
    per_sample,
)

__all__ = ["InputFanout", "UncountableError", "count_synaptic_operations", "event_sources",
           "input_event_fanout", "network_fanout", "synaptic_fanout"]

class UncountableError(NotImplementedError, ValueError):
    """Operation counting cannot count this network exactly (a layer or path it does not
    know). A ``ValueError`` too: the network, not the run, is what it refuses (CLI exit 2)."""

    HINT = "evaluate it without counting: count_operations=False, CLI --no-energy"

    def __init__(self, message: str) -> None:
        super().__init__(message if self.HINT in message else f"{message}; {self.HINT}")


def _sum_pool(x: torch.Tensor, dims: int, kernel, stride, padding, ceil_mode: bool) -> torch.Tensor:
    """Average pooling that sums (divisor 1): every window element reaches its output once."""
    kernel = ntuple(kernel, dims)
    stride = kernel if stride is None or stride == [] or stride == () else ntuple(stride, dims)
    padding = ntuple(padding, dims)
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
                raise UncountableError(
                    f"IF neuron {target!r} is called more than once; operation counting needs "
                    "one call per neuron module"
                )
            self.targets[target] = x
            leaf = torch.zeros_like(x, requires_grad=True)
            self.leaves[target] = leaf
            return leaf
        if isinstance(module, SpikingMaxPool2d):
            # a gate, not a synapse: the spikes it is given stop here (no accumulate), and the
            # ones it passes on are events of its own, each costing its fan-out (§8.2)
            with torch.no_grad():
                shape = F.max_pool2d(x, module.kernel_size, module.stride, module.padding,
                                     module.dilation, module.ceil_mode).shape
            leaf = torch.zeros(shape, dtype=x.dtype, device=x.device, requires_grad=True)
            self.leaves[target] = leaf
            return leaf
        if isinstance(module, CONV_MODULES):
            out = module._conv_forward(x, torch.ones_like(module.weight, dtype=x.dtype), None)
        elif isinstance(module, CONV_TRANSPOSE_MODULES):
            out = type(module).forward(_OnesView(module, x.dtype), x)
        elif isinstance(module, nn.Linear):
            out = F.linear(x, torch.ones_like(module.weight, dtype=x.dtype))
        elif isinstance(module, (*BATCHNORM_MODULES, nn.Identity, *DROPOUT_MODULES)):
            return x
        elif type(module) in AVG_POOL_MODULES:
            return _sum_pool(x, AVG_POOL_MODULES[type(module)], module.kernel_size, module.stride,
                             module.padding, module.ceil_mode)
        elif type(module) in ADAPTIVE_POOL_MODULES:
            return _adaptive_sum_pool(x, ADAPTIVE_POOL_MODULES[type(module)], module.output_size)
        elif isinstance(module, (nn.Flatten, nn.Unflatten)):
            return module(x)
        elif isinstance(module, nn.MaxPool2d):
            raise UncountableError(
                f"operation counting: the max-pool {target!r} takes analog values (event input "
                "frames, or currents), so what it passes on are not events")
        else:
            raise UncountableError(
                f"operation counting does not know layer {target!r} ({type(module).__name__}); "
                "supported: Conv/ConvTranspose, Linear, BatchNorm, (adaptive) average pooling, "
                "Flatten/Unflatten, Identity, adds, constant scalings and reshapes"
            )
        if getattr(module, "bias", None) is not None:
            self.bias_elements += per_sample(out)
        return out

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if target in SCALING_FUNCTIONS:
            signals = [t for t in tensors if t.requires_grad] or tensors
            if len(signals) != 1:
                raise UncountableError("operation counting: a product of two signals")
            return signals[0]
        if target in ADD_FUNCTIONS:
            if len(tensors) == 1:
                return tensors[0]  # adding a constant: no synapse
            return tensors[0] + tensors[1]  # alpha ignored: each operand is one accumulate
        if target in AVG_POOL_FUNCTIONS:
            dims = AVG_POOL_FUNCTIONS[target]
            names = ("input", "kernel_size", "stride", "padding", "ceil_mode")
            given = {**dict(zip(names, args, strict=False)), **kwargs}
            return _sum_pool(given["input"], dims, given["kernel_size"], given.get("stride"),
                             given.get("padding", 0), given.get("ceil_mode", False))
        if target in ADAPTIVE_POOL_FUNCTIONS:
            size = args[1] if len(args) > 1 else kwargs["output_size"]
            return _adaptive_sum_pool(args[0], ADAPTIVE_POOL_FUNCTIONS[target], size)
        if target in CONV_FUNCTIONS or target is F.linear:
            args = list(args)
            weight = args[1] if len(args) > 1 else kwargs.pop("weight")
            ones = torch.ones_like(weight, dtype=args[0].dtype)
            bias = args[2] if len(args) > 2 else kwargs.pop("bias", None)
            args = [args[0], ones, None, *args[3:]]
            out = target(*args, **kwargs)
            if bias is not None:
                self.bias_elements += per_sample(out)
            return out
        if target is torch.mean:  # torch.mean(x, dims): a sum with unit weights
            dims = args[1] if len(args) > 1 else kwargs.get("dim")
            keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
            return args[0].sum(dim=dims, keepdim=keep)
        if target in SHAPE_FUNCTIONS:
            return super().call_function(target, args, kwargs)
        raise UncountableError(
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
        raise UncountableError(f"operation counting does not know the method .{target}()")


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
    device, _ = module_device_dtype(module)
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
class SourceFanout:
    """One event source's static counting data for one input shape (an IF layer, or a
    spiking max-pool relaying one's spikes)."""

    neurons: int
    shape: tuple[int, ...]
    targets: list[str]
    matrix: torch.Tensor  # [N, len(targets)] fan-out into each target
    value: float
    negative_value: float | None
    relay: bool = False  # a spiking max-pool: passes on spikes, is no neuron (no firing rate)
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


@dataclass
class StaticCosts:
    """Everything about one input shape that does not depend on the spikes."""

    sources: dict[str, SourceFanout]
    ann: AnnCost
    prefix_macs: int
    analog_macs_per_step: int
    bias_per_step: int
    ann_macs_into: dict[str, int]


def first_neuron_fed(gm: fx.GraphModule, node: fx.Node) -> str:
    """The IF neuron (or ``"output"``) that ``node``'s result flows into first."""
    frontier, seen = [node], {node}
    while frontier:
        following = []
        for n in frontier:
            for user in n.users:
                if user.op == "output":
                    return "output"
                if is_neuron_node(gm, user):
                    return user.target
                if user not in seen:
                    seen.add(user)
                    following.append(user)
        frontier = following
    return "output"


def event_sources(snn: SpikingNetwork) -> dict[str, tuple[IFNeuron, bool]]:
    """Every layer whose outputs are spike events, by name, in forward order: ``(the IF neuron
    whose spikes they are, whether the layer only relays them)``. The IF neurons, and each
    spiking max-pool (:mod:`spikebridge.spiking_maxpool`), which passes on spikes of the IF
    layer feeding it.

    Raises:
        NotImplementedError: a spiking max-pool whose input is not an IF layer's output (its
            outputs would be graded values, not events).
    """
    gm = snn.network
    found: dict[str, tuple[IFNeuron, bool]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        if isinstance(module, IFNeuron):
            found[node.target] = (module, False)
        elif isinstance(module, SpikingMaxPool2d):
            source = node.args[0] if node.args else None
            if not (isinstance(source, fx.Node) and is_neuron_node(gm, source)):
                raise UncountableError(
                    f"operation counting: the spiking max-pool {node.target!r} does not pool an "
                    "IF layer's spikes directly, so what it passes on are not events")
            found[node.target] = (gm.get_submodule(source.target), True)
    return found


def static_costs(snn: SpikingNetwork, sample_shape: Sequence[int],
                  device: torch.device) -> StaticCosts:
    gm = snn.network
    ann = ann_operations(snn, sample_shape)
    dynamic_names = {n.name for n in time_dependent_nodes(gm)}
    nodes = {n.name: n for n in gm.graph.nodes}
    prefix_macs = sum(layer.macs for layer in ann.layers if layer.name not in dynamic_names)
    ann_macs_into: dict[str, int] = {}
    for layer in ann.layers:
        target = first_neuron_fed(gm, nodes[layer.name]) if layer.name in nodes else "output"
        ann_macs_into[target] = ann_macs_into.get(target, 0) + layer.macs
    split = snn.split
    dtype = _counting_dtype(device)
    x = torch.zeros(1, *sample_shape, device=device, dtype=dtype)
    with torch.no_grad():
        constants = _run_double(split.prefix, x)
    analog = [not only for only in split.neuron_only]
    fanout, analog_fanout, interpreter = _fanouts(split.body, constants, analog)
    sources = {}
    for name, (neuron, relay) in event_sources(snn).items():
        targets = fanout.get(name, {})
        leaf = interpreter.leaves.get(name)
        shape = () if leaf is None else tuple(leaf.shape[1:])
        n = math.prod(shape) if shape else 0
        names = list(targets)
        matrix = (torch.stack([targets[t].reshape(-1) for t in names], dim=1).to(dtype)
                  if names else torch.zeros(n, 0, device=device, dtype=dtype))
        sources[name] = SourceFanout(n, shape, names, matrix, neuron.spike_value(),
                                     neuron.negative_spike_value(),
                                     relay=relay)
    analog_macs = int(sum(float(v.sum()) for v in analog_fanout.values()))
    return StaticCosts(sources, ann, prefix_macs, analog_macs, interpreter.bias_elements,
                   ann_macs_into)


def _run_double(prefix: fx.GraphModule, x: torch.Tensor) -> tuple:
    """The prefix's outputs for a zero image, cast to the counting dtype (shapes are all we use)."""
    param_dtype = module_device_dtype(prefix)[1]
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
    static = static_costs(snn, input_shape, device)
    return {name: source.matrix.sum(dim=1).view(source.shape)
            for name, source in static.sources.items()}


_SYNAPTIC_MODULES = (*CONV_MODULES, *CONV_TRANSPOSE_MODULES, nn.Linear)


class _InputEventReach(_Connectivity):
    """Follows the network's input through non-synaptic layers (pooling, reshapes, scalings) to
    the first synaptic layers (conv, linear) or IF neurons it meets, and stops there.

    After :meth:`run`: ``first`` (node name → that layer's all-ones output, or a neuron's input
    current), ``reached`` (names of the nodes in between, pooling included: folded into the
    first layer's fan-out, their own additions not counted, as in §8.2). Nodes past the first
    layers compute ``None``; ``bias_elements`` counts only the first layers' biased outputs.
    """

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.first: dict[str, torch.Tensor] = {}
        self.reached: set[str] = set()
        self._frontier: set[fx.Node] = set()

    def run_node(self, n: fx.Node) -> Any:
        if n.op == "placeholder":
            out = super().run_node(n)
            if not self._frontier:  # the first placeholder is the image
                self._frontier.add(n)
            return out
        if n.op not in ("call_module", "call_function", "call_method"):
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        if any(value is None for value in (*args, *kwargs.values())):
            return None  # past the first layers: analog values, not reached by events
        if not any(node in self._frontier for node in n.all_input_nodes):
            return super().run_node(n)  # a constant computation (buffers, shapes)
        if is_neuron_node(self.module, n):
            self.first[n.name] = input_current(args)  # events straight into a neuron
            return None
        synaptic = (n.op == "call_module" and isinstance(self.fetch_attr(n.target),
                                                         _SYNAPTIC_MODULES)) or (
            n.op == "call_function" and (n.target in CONV_FUNCTIONS or n.target is F.linear))
        out = super().run_node(n)
        if synaptic:
            self.first[n.name] = out
            return None
        self.reached.add(n.name)
        self._frontier.add(n)
        return out


@dataclass
class InputFanout:
    """Counting data for input events into the first synaptic layers, for one input shape.

    ``targets``: the IF layers (or ``"output"``) those layers feed; ``matrix`` ``[N, targets]``:
    the accumulates one event at each input element (logical ``C, H, W`` order) triggers in the
    layers feeding each target; ``first_layers``: those layers' names (their MACs are replaced
    by these SOPs); ``analog_macs``: MACs per frame of the remaining time-invariant prefix
    layers, which compute on analog values (none in the shipped models); ``bias_elements``:
    the first layers' biased outputs (one bias accumulate each per frame).
    """

    shape: tuple[int, ...]
    targets: list[str]
    matrix: torch.Tensor
    first_layers: list[str]
    analog_macs: int
    bias_elements: int


def input_event_fanout(snn: SpikingNetwork, sample_shape: Sequence[int],
                       device: torch.device | None = None) -> InputFanout:
    r"""Fan-out of every input element into the first synaptic layers (module docstring).

    An event at input element :math:`j` (one count of an event frame) costs
    :math:`\mathrm{fanout}_{in}(j)`: for a convolution, the output positions whose receptive
    field holds :math:`j` (padding and stride honoured: fewer at the borders) times the output
    channels of :math:`j`'s group; for a linear layer, its output width.
    """
    gm = snn.network
    if device is None:
        device = next((p.device for p in snn.parameters()), torch.device("cpu"))
    dtype = _counting_dtype(device)
    interpreter = _InputEventReach(gm)
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.zeros(1, *sample_shape, dtype=dtype, device=device, requires_grad=True)
        interpreter.run(x)
        nodes = {n.name: n for n in gm.graph.nodes}
        into: dict[str, torch.Tensor] = {}
        for name, value in interpreter.first.items():
            if not value.requires_grad:
                continue
            (grad,) = torch.autograd.grad(value.sum(), [x], retain_graph=True, allow_unused=True)
            if grad is None:
                continue
            node = nodes[name]
            target = node.target if is_neuron_node(gm, node) else first_neuron_fed(gm, node)
            counts = grad[0].detach().round().reshape(-1)
            into[target] = into.get(target, 0) + counts
    targets = list(into)
    n = math.prod(sample_shape)
    matrix = (torch.stack([into[t] for t in targets], dim=1) if targets
              else torch.zeros(n, 0, device=device, dtype=dtype))
    first = [name for name in interpreter.first if not is_neuron_node(gm, nodes[name])]
    dynamic = {node.name for node in time_dependent_nodes(gm)}
    skipped = set(first) | interpreter.reached | dynamic
    analog = sum(layer.macs for layer in ann_operations(snn, sample_shape).layers
                 if layer.name not in skipped)
    return InputFanout(tuple(sample_shape), targets, matrix, first, int(analog),
                       interpreter.bias_elements)
