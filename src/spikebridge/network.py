"""The converted spiking network: an fx graph of linear layers and IF neurons.

:class:`SpikingNetwork` is a standard ``nn.Module``. Besides the converted graph it knows which
part of the graph is *time-invariant*: with direct input encoding (docs/methods.md §2.6) the analog
image is the same at every step, so every node that depends only on the input (the first
convolution, its BatchNorm, …) is computed once per batch, not once per step. The graph is split
into a ``prefix`` (input → those constant currents) and a ``body`` (constants → output), the same
way for step-by-step and layer-wise execution.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import fx, nn

from .neurons import IFNeuron


class ConversionMethodLike(Protocol):
    """What the network needs of the conversion method that built it (the methods sit above the
    network: they build one, so this module names only the interface,
    :class:`spikebridge.methods.ConversionMethod` implements it)."""

    name: str

    def needs_sequence_mode(self) -> bool: ...

    def params(self) -> dict[str, Any]: ...

__all__ = [
    "SpikingNetwork",
    "TimeSplit",
    "fuse_residual_currents",
    "is_neuron_node",
    "split_time_invariant",
    "time_dependent_nodes",
]


@dataclass
class TimeSplit:
    """``prefix(x) -> constants``; ``body(*constants) -> output``.

    ``neuron_only[i]`` says whether constant ``i`` feeds nothing but IF neurons (it can then be
    passed as one ``[B, ...]`` current for all steps; otherwise layer-wise execution repeats it).
    """

    prefix: fx.GraphModule
    body: fx.GraphModule
    neuron_only: list[bool]


def is_neuron_node(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` calls an IF neuron module of ``gm``."""
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), IFNeuron)


def time_dependent_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    """The nodes whose value changes over time: IF neurons and everything computed from them.

    With direct encoding (a constant input) every other node is computed once per batch.
    """
    dynamic: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if is_neuron_node(gm, node) or (
            node.op in ("call_module", "call_function", "call_method")
            and any(arg in dynamic for arg in node.all_input_nodes)
        ):
            dynamic.add(node)
    return dynamic


def split_time_invariant(gm: fx.GraphModule) -> TimeSplit:
    """Split ``gm`` into the part that depends only on the (constant) input and the rest."""
    graph = gm.graph

    dynamic = time_dependent_nodes(gm)
    boundary = [
        node for node in graph.nodes
        if node not in dynamic and node.op not in ("output", "get_attr")
        and any(user in dynamic or user.op == "output" for user in node.users)
    ]

    prefix_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        if node.op != "output" and node not in dynamic:
            env[node] = prefix_graph.node_copy(node, lambda n: env[n])
    prefix_graph.output(tuple(env[node] for node in boundary))

    body_graph = fx.Graph()
    env = {node: body_graph.placeholder(node.name) for node in boundary}
    for node in graph.nodes:
        if node.op == "get_attr" or node in dynamic or node.op == "output":
            env[node] = body_graph.node_copy(node, lambda n: env[n])
    # decided on the unfused graph: a constant feeding a residual add is repeated over time in
    # layer-wise execution, as the add needs, also once the add has moved into the neuron
    neuron_only = [all(is_neuron_node(gm, user) for user in node.users) for node in boundary]
    body = fx.GraphModule(gm, body_graph, "SpikingBody")
    fuse_residual_currents(body)
    return TimeSplit(fx.GraphModule(gm, prefix_graph, "TimeInvariantPrefix"), body, neuron_only)


_ADD_FUNCTIONS = (operator.add, torch.add)


def fuse_residual_currents(gm: fx.GraphModule) -> int:
    """Rewrite ``neuron(a + b)`` into ``neuron(a, b)`` where the sum feeds nothing else.

    A residual block's output neuron integrates :math:`c = a + b` (the block's last
    convolution plus the shortcut). Passed separately, the layer-wise IF scan
    (:func:`spikebridge.if_kernel.fused_if_scan_`) sums them in registers — same rounding, and
    the ``[T·B, ...]`` sum is never written to memory and read back (docs/benchmarks.md §4).
    Only a plain two-tensor ``+`` (``operator.add`` / ``torch.add`` without ``alpha``) whose
    only user is the neuron is rewritten. Returns the number of neurons rewritten.
    """
    fused = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        if not is_neuron_node(gm, node):
            continue
        (source,) = node.args
        if (isinstance(source, fx.Node) and source.op == "call_function"
                and source.target in _ADD_FUNCTIONS and not source.kwargs
                and len(source.args) == 2 and len(source.users) == 1
                and all(isinstance(a, fx.Node) for a in source.args)):
            node.args = tuple(source.args)
            gm.graph.erase_node(source)
            fused += 1
    if fused:
        gm.graph.lint()
        gm.recompile()
    return fused


class SpikingNetwork(nn.Module):
    """A converted SNN: ``network`` (the rewritten fx graph), its conversion method, and the map
    ``sources`` from each IF neuron's name to the ANN activation it replaced.

    It is run by :func:`spikebridge.simulate` (``[steps, B, classes]``); calling it directly
    raises, as one call has no time axis.
    """

    def __init__(
        self, network: fx.GraphModule, method: ConversionMethodLike, sources: dict[str, str]
    ) -> None:
        super().__init__()
        self.network = network
        self.method = method
        self.sources = dict(sources)
        self.weight_bits: int | None = None
        # per-sample input shape, e.g. (1, 28, 28), when known (spikebridge.input_checks)
        self.input_shape: tuple[int, ...] | None = None
        self._split: TimeSplit | None = None
        self._channels_last = False

    def replace_network(self, network: fx.GraphModule) -> None:
        """Swap in a rewritten graph (normalized or quantized weights); same neuron names."""
        self.network = network
        self._split = None
        self._channels_last = False

    def prefer_channels_last(self) -> None:
        """Store every 4-D weight channels_last (once; values unchanged).

        The CPU simulator feeds channels_last input (docs/benchmarks.md §4); with NCHW weights
        oneDNN would reorder each weight on every convolution call, every step.
        """
        if getattr(self, "_channels_last", False):  # absent in older pickles
            return
        # new Parameter objects, made outside inference mode: the old ones may be inference
        # tensors (a method that prepared the network under torch.inference_mode), whose data
        # cannot be swapped in place
        with torch.inference_mode(False), torch.no_grad():
            for module in self.network.modules():
                for name, param in list(module.named_parameters(recurse=False)):
                    if param.dim() != 4:
                        continue
                    # .to(), not .contiguous(): a weight with one input channel
                    # ([C, 1, k, k]) counts as channels_last-contiguous in NCHW strides, and
                    # .contiguous() keeps those; oneDNN then runs the layer — and the IF update
                    # and pooling after it — in NCHW, where average pooling is ~7× slower
                    packed = param.detach().to(memory_format=torch.channels_last)
                    if packed.stride() != param.stride():
                        setattr(module, name, nn.Parameter(
                            packed, requires_grad=param.requires_grad))
        self._split = None
        self._channels_last = True

    def set_horizon(self, steps: int) -> None:
        """Tell every neuron the length ``T`` of the coming run (ECC's TRE current is ηθ/T)."""
        for neuron in self.neurons().values():
            neuron.horizon = int(steps)

    def horizon_dependent(self) -> bool:
        """Whether results at T need a run of exactly T steps (a neuron with a TRE current)."""
        return any(n.residual for n in self.neurons().values())

    def neurons(self) -> dict[str, IFNeuron]:
        """IF neurons by name, in forward (topological) order."""
        found: dict[str, IFNeuron] = {}
        for node in self.network.graph.nodes:
            if node.op == "call_module":
                module = self.network.get_submodule(node.target)
                if isinstance(module, IFNeuron):
                    found[node.target] = module
        return found

    def stateful_layers(self) -> list[nn.Module]:
        """Every layer that carries state across steps (it has a ``reset_state()``): the IF
        neurons and any other, such as a spiking max-pool's accumulated counts
        (:mod:`spikebridge.spiking_maxpool`)."""
        return [module for module in self.network.modules()
                if module is not self.network and callable(getattr(module, "reset_state", None))]

    def reset_state(self) -> None:
        """Forget all state: every neuron's membrane potential, every stateful layer's state."""
        for layer in self.stateful_layers():
            layer.reset_state()

    @property
    def split(self) -> TimeSplit:
        """Time-invariant prefix / spiking body (built on first use; shares the parameters)."""
        if self._split is None:
            self._split = split_time_invariant(self.network)
        return self._split

    def frames_needed(self, steps: int) -> int:
        """Input frames to simulate so that a calibrating neuron can read its first ρ frames."""
        return max([steps, *(n.calibration.frames_read() for n in self.neurons().values()
                             if n.calibration is not None)])

    def forward(self, *_args: object, **_kwargs: object) -> torch.Tensor:
        raise TypeError(
            "a SpikingNetwork runs over time: call spikebridge.simulate(snn, x, steps) "
            "(outputs [steps, B, K]) or spikebridge.evaluate(snn, loader, steps)")

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module signature
        self._split = None  # moved buffers/attributes: rebuild the split on next use
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())  # a copy: never touch the live cache
        state["_split"] = None
        return state
