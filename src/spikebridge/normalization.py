r"""Weight normalization: rewrite a converted network into unit-spike form (docs/methods.md §7.3).

Data-based methods (Rueckauer 2017, threshold balancing, RMP-SNN, OPI, ECC) describe their SNN
with **unit spikes** :math:`s\in\{0,1\}` and rescaled weights. For a neuron :math:`n` with scale
:math:`\lambda_n` (the value one of its spikes stands for in the ANN's units) and threshold
:math:`\kappa_n`, a layer feeding :math:`n` from a neuron :math:`m` gets

.. math::
    W^n \leftarrow \kappa_n\frac{\lambda_m}{\lambda_n} W^n,\qquad
    b^n \leftarrow \kappa_n\frac{b^n}{\lambda_n},\qquad V^n_{\mathrm{thr}} = \kappa_n

(ECC eq. 8; :math:`\kappa_n = 1` is Rueckauer's weight normalization). This module applies that
rule to any converted graph, not only to chains: every tensor carries a *unit* :math:`u` (the ANN
value that 1.0 stands for). The input has :math:`u = 1`; a neuron's output has
:math:`u = \lambda_n`; its input current must have :math:`u = \lambda_n/\kappa_n`. A conv/linear
layer absorbs any change of unit in its weights (:math:`W \leftarrow W u_{in}/u_{out}`,
:math:`b \leftarrow b/u_{out}`) and picks the unit that the neuron it feeds needs (looking forward
through pooling, flatten and residual adds); where two signals of different units meet (a
residual add whose shortcut carries a neuron's spikes) a constant scaling node is inserted, and the
network output is scaled back to the ANN's units. The result computes the same function as the
weighted-spike network (``x = λ s``) — exactly in real arithmetic, up to float rounding in
practice — which :func:`rate_network` makes testable at the ANN level.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Mapping

import torch
from torch import fx, nn

from .batchnorm_folding import FOLDABLE
from .neurons import IFNeuron
from .spiking_maxpool import SpikingMaxPool2d

__all__ = ["NormalizationError", "RateNeuron", "normalize_weights", "rate_network"]

# Nodes whose output has the unit of their (first) tensor input.
_UNIT_PRESERVING_MODULES = (
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.Flatten, nn.Unflatten, nn.Identity,
    # max-pooling commutes with a positive scale, max(u·x) = u·max(x); the spiking max-pool
    # gates by spike counts, which a unit does not change
    nn.MaxPool2d, SpikingMaxPool2d,
)
_MERGING_FUNCTIONS = {operator.add, operator.iadd, torch.add, torch.cat}


class NormalizationError(ValueError):
    """The graph cannot be put into unit-spike form."""


def _is_neuron(gm: fx.GraphModule, node: fx.Node) -> bool:
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), IFNeuron)


def _is_weighted(gm: fx.GraphModule, node: fx.Node) -> bool:
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), FOLDABLE)


def _is_merge(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _MERGING_FUNCTIONS) or (
        node.op == "call_method" and node.target in ("add", "add_")
    )


def _passes_unit(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether the unit flows through ``node`` unchanged (pooling, reshapes, adds, scaling)."""
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), _UNIT_PRESERVING_MODULES)
    return node.op in ("call_function", "call_method")


def _required_unit(
    gm: fx.GraphModule, node: fx.Node, unit_in: Mapping[str, float]
) -> float | None:
    """The unit the consumer of ``node`` needs: follow single users through unit-preserving
    nodes to a neuron (whose input must be ``λ/κ``); ``None`` if there is none or it branches."""
    current = node
    while len(current.users) == 1:
        (user,) = current.users
        if _is_neuron(gm, user):
            return unit_in[user.target]
        if user.op == "output" or not _passes_unit(gm, user):
            return None
        current = user
    return None


def normalize_weights(
    gm: fx.GraphModule,
    scales: Mapping[str, float],
    thresholds: Mapping[str, float],
    *,
    threshold_factor: float = 1.0,
    output_scale: bool = True,
) -> fx.GraphModule:
    r"""Unit-spike form of a converted graph: a new GraphModule, ``gm`` is not modified.

    ``scales[name]`` is :math:`\lambda_n` and ``thresholds[name]`` is :math:`\kappa_n` for every IF
    neuron ``name``. Each neuron gets threshold :math:`\kappa_n` and amplitude 1 (unit spikes);
    weights and biases are rescaled as in the module docstring. ``threshold_factor`` α then
    multiplies every firing threshold (``ακ``) *without* changing the weights — RMP-SNN's
    threshold scaling (§7.9): neurons fire at α·λ while their spikes still count as λ. With
    ``output_scale`` the network output is multiplied back into the ANN's units.
    """
    if not (float(threshold_factor) > 0.0 and math.isfinite(float(threshold_factor))):
        raise NormalizationError(f"threshold factor must be finite and > 0, got {threshold_factor}")
    gm = copy.deepcopy(gm)
    neurons = {n.target: n for n in gm.graph.nodes if _is_neuron(gm, n)}
    missing = sorted(set(neurons) - set(scales)) + sorted(set(neurons) - set(thresholds))
    if missing:
        raise NormalizationError(f"no scale/threshold given for neuron(s) {sorted(set(missing))}")
    for name in neurons:
        for what, value in (("scale λ", scales[name]), ("threshold κ", thresholds[name])):
            if not (float(value) > 0.0 and math.isfinite(float(value))):
                raise NormalizationError(
                    f"neuron {name!r}: {what} must be a finite number > 0, got {value} (a layer "
                    "whose activations are all zero on the calibration data has no scale; use "
                    "more calibration samples)"
                )
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if _is_weighted(gm, node):
            calls[node.target] = calls.get(node.target, 0) + 1
    shared = sorted(k for k, v in calls.items() if v > 1)
    if shared:
        raise NormalizationError(f"layer(s) {shared} are called more than once; weight "
                                 "normalization needs one set of weights per call")
    unit_in = {name: float(scales[name]) / float(thresholds[name]) for name in neurons}
    unit: dict[fx.Node, float] = {}

    def rescale(value: fx.Node, factor: float, before: fx.Node) -> fx.Node:
        """A node computing ``value * factor``, inserted before ``before``."""
        with gm.graph.inserting_before(before):
            return gm.graph.call_function(operator.mul, (value, factor))

    for node in list(gm.graph.nodes):
        if node.op == "placeholder":
            unit[node] = 1.0
        elif node.op == "get_attr":
            unit[node] = 1.0
        elif _is_neuron(gm, node):
            source = node.args[0]
            want = unit_in[node.target]
            if not math.isclose(unit[source], want, rel_tol=1e-12):
                node.replace_input_with(source, rescale(source, unit[source] / want, node))
            neuron: IFNeuron = gm.get_submodule(node.target)
            if neuron.negative is not None:
                raise NormalizationError(f"neuron {node.target!r} is signed; weight "
                                         "normalization is defined for ReLU (unsigned) neurons")
            neuron.threshold.fill_(float(thresholds[node.target]) * float(threshold_factor))
            neuron.amplitude = 1.0
            unit[node] = float(scales[node.target])
        elif _is_weighted(gm, node):
            layer = gm.get_submodule(node.target)
            u_in = unit[node.args[0]]
            u_out = _required_unit(gm, node, unit_in) or u_in
            with torch.no_grad():
                layer.weight.copy_((layer.weight.double() * (u_in / u_out)).to(layer.weight.dtype))
                if layer.bias is not None:
                    layer.bias.copy_((layer.bias.double() / u_out).to(layer.bias.dtype))
            unit[node] = u_out
        elif _is_merge(node):
            inputs = [a for a in node.all_input_nodes]
            target = _required_unit(gm, node, unit_in) or unit[inputs[0]]
            for value in inputs:
                if not math.isclose(unit[value], target, rel_tol=1e-12):
                    node.replace_input_with(value, rescale(value, unit[value] / target, node))
            unit[node] = target
        elif node.op == "output":
            result = node.args[0]
            if output_scale and isinstance(result, fx.Node) and unit[result] != 1.0:
                node.replace_input_with(result, rescale(result, unit[result], node))
        elif _passes_unit(gm, node):
            tensors = node.all_input_nodes
            unit[node] = unit[tensors[0]] if tensors else 1.0
        else:
            module = gm.get_submodule(node.target) if node.op == "call_module" else None
            raise NormalizationError(
                f"node {node.format_node()} ({type(module).__name__ if module else node.op}) "
                "cannot be rescaled for weight normalization (a BatchNorm that could not be "
                "folded into a conv/linear layer?)"
            )
    gm.graph.lint()
    gm.recompile()
    return gm


class RateNeuron(nn.Module):
    r"""The :math:`T\to\infty` response of an IF neuron, :math:`A\,\mathrm{clip}(c/\theta, r_-, 1)`.

    The ANN-level view of a converted layer: the average output of a neuron with constant input
    current ``c`` (docs/methods.md §2.5 without the floor), with ``r₋ = -θ₋·A₋/(θ A)``-scaled
    negative branch for signed neurons and ``r₋ = 0`` otherwise. ``clip=False`` drops the upper
    bound (the ReLU the normalization assumes never saturates on calibration data).
    """

    def __init__(self, neuron: IFNeuron, clip: bool = True) -> None:
        super().__init__()
        self.theta = float(neuron.threshold)
        self.value = neuron.spike_value()
        self.negative = neuron.negative
        self.clip = clip

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        positive = torch.relu(current) / self.theta
        if self.clip:
            positive = positive.clamp(max=1.0)
        out = positive * self.value
        if self.negative is not None:
            neg_theta, neg_value = self.negative
            negative = torch.relu(-current) / neg_theta
            if self.clip:
                negative = negative.clamp(max=1.0)
            out = out - negative * neg_value
        return out


def rate_network(gm: fx.GraphModule, clip: bool = True) -> fx.GraphModule:
    """A copy of a converted graph with every IF neuron replaced by its :class:`RateNeuron`."""
    gm = copy.deepcopy(gm)
    for node in gm.graph.nodes:
        if _is_neuron(gm, node):
            neuron = gm.get_submodule(node.target)
            parent, _, child = node.target.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, child, RateNeuron(neuron, clip))
    gm.recompile()
    return gm
