"""Export a converted SNN to NIR (the Neuromorphic Intermediate Representation) and read it back
(docs/export.md).

NIR's neuron ``IF(r, v_threshold, v_reset)`` integrates ``v̇ = R·I``, fires on ``v > v_thr``
(strict) and resets *to* ``v_reset``; it has no reset by subtraction and no initial state. So
the export is not a field-by-field copy; every IF neuron of ours (docs/methods.md §2.1–2.3,
``m(t) = v(t-1) + c(t)``, ``s(t) = H(m(t) − θ)`` with ``H(0) = 1``) becomes:

* **hard reset** (``reset="zero"``): ``nir.IF(r=1, v_threshold=θ⁻, v_reset=0)`` where ``θ⁻`` is
  the float32 number just below θ, so that NIR's ``v > θ⁻`` is exactly our ``v ≥ θ`` on float32
  potentials (a current landing exactly on θ fires in both);
* **reset by subtraction** (``reset="subtract"``): a sub-graph ``Input → I(r=1) → Threshold(θ⁻)
  → Output`` with the recurrent edge ``Threshold → Scale(−θ) → I``. Its integrator holds our
  pre-reset potential: ``m(t) = m(t−1) + c(t) − θ·s(t−1)``, **if the consumer delivers a
  recurrent edge one step later** (the usual discrete-time convention for cycles; stated in the
  graph's metadata);
* the spike's value — θ for weighted spikes — as a ``Scale`` after the neuron;
* the initial potential ``v(0) = φθ`` (or frozen COS's per-neuron array) in the neuron's
  metadata (``spikebridge.initial_potential``):
  NIR has no field for an initial state, and no constant source a one-step ``Delay`` could turn
  into a step-1 current. A consumer that ignores it starts at 0: for QCFS-style conversions
  (φ = ½) that is a different network, and docs/export.md says how different.

Layers: ``Conv2d`` (with its bias, the BatchNorm folded in), ``Affine`` / ``Linear``,
``AvgPool2d`` (adaptive pooling with a divisible size as the equivalent ``AvgPool2d``, the
original recorded in metadata), ``Flatten``; residual additions are fan-in edges (NIR sums a
node's inputs); identities and dropout vanish. The image is the ``Input`` at every step (direct
encoding), so the first layer's constant current is recomputed per step by a consumer.

Refused, in one line naming the reason: COS (it calibrates each sample's initial potentials
online from its first ρ frames — a static graph cannot), signed neurons (stReLU, leaky
threshold: NIR has no neuron emitting negative spikes), ECC's residual-elimination current
ηθ/T (it depends on T), and any layer or op outside the list above.

``load_nir`` reads a graph written by :func:`export_nir` back into a :class:`SpikingNetwork`
whose simulation is bit-identical to the original's.
"""

from __future__ import annotations

import io
import math
import operator
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .checkpoint import atomic_write_bytes
from .limits import UsageError
from .methods import get_method
from .network import SpikingNetwork
from .neurons import IFNeuron
from .spiking_maxpool import SpikingMaxPool2d

__all__ = [
    "NIR_METADATA_KEY",
    "NirExportError",
    "export_nir",
    "for_consumers",
    "load_nir",
    "write_nir",
]

NIR_METADATA_KEY = "spikebridge"
_SUBTRACT_KIND = "if-subtract-reset"


class NirExportError(UsageError):
    """The SNN (or NIR graph) holds something NIR (or this reader) cannot express exactly."""


def _nir():
    try:
        import nir
    except ImportError as exc:  # pragma: no cover - nir is a dependency
        raise NirExportError("NIR export needs the nir package: pip install nir==1.0.8") from exc
    return nir


def _clean(meta: dict) -> dict:
    """Metadata as NIR's HDF5 writer takes it: ``None`` values are left out (read back as
    absent), nested dicts cleaned too."""
    return {k: _clean(v) if isinstance(v, dict) else v for k, v in meta.items() if v is not None}


def _below(threshold: float) -> float:
    """The float32 number just below ``threshold``: ``v > it`` ⇔ ``v ≥ threshold`` in float32."""
    return float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))


_ADD = {operator.add, operator.iadd, torch.add}
_PASS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                 nn.AlphaDropout)


def _refuse_method(snn: SpikingNetwork) -> None:
    if snn.method.needs_sequence_mode():
        raise NirExportError(
            f"method {snn.method.name!r} calibrates every sample's initial potentials online "
            "from its first ρ input frames, which a static NIR graph cannot express; convert with "
            "--method cos-frozen instead (COS's calibration averaged over training images into "
            "a static v(0) per neuron; docs/export.md compares the two per T), or qcfs"
        )
    for name, neuron in snn.neurons().items():
        if neuron.memory:
            raise NirExportError(
                f"neuron {name} is a signed neuron with memory (--neuron memory, "
                "docs/methods.md §2.7): it takes back spikes with negative ones, and NIR has no "
                "such neuron; export the network converted with --neuron if")
        if neuron.signed:
            raise NirExportError(f"neuron {name} also emits negative spikes (method "
                                 f"{snn.method.name!r}); NIR has no such neuron")
        if neuron.residual:
            raise NirExportError(
                f"neuron {name} adds ECC's residual-elimination current ηθ/T, which depends on "
                "the run length T; export ecc:tre=0, or convert with another method")


def _array(value: torch.Tensor) -> np.ndarray:
    return value.detach().cpu().contiguous().numpy().astype(np.float32, copy=True)


def _pair(value: Any) -> np.ndarray:
    return np.array(value if isinstance(value, tuple | list) else (value, value), dtype=np.int64)


def _neuron_nodes(nir: Any, name: str, neuron: IFNeuron, shape: tuple[int, ...]) -> dict:
    """The NIR encoding of one IF neuron: ``{node name: node}``, entered at ``name`` and left
    at ``name + ".spike"`` (the Scale by the spike's value)."""
    theta = float(neuron.threshold)
    initial = (neuron.initial_fraction * theta if neuron.initial_state is None
               else _array(neuron.initial_state))
    meta = {"threshold": theta, "reset": neuron.reset, "initial_fraction": neuron.initial_fraction,
            "initial_potential": initial, "amplitude": neuron.amplitude,
            "fires_on": "v >= threshold (exported as v > the float32 number just below it)"}
    ones = np.ones(shape, dtype=np.float32)
    below = np.full(shape, _below(theta), dtype=np.float32)
    if neuron.reset == "zero":
        core = nir.IF(r=ones, v_threshold=below, v_reset=np.zeros(shape, dtype=np.float32),
                      metadata={NIR_METADATA_KEY: _clean(meta)})
    else:
        core = nir.NIRGraph(
            nodes={"input": nir.Input(input_type={"input": np.array(shape)}),
                   "integrator": nir.I(r=ones.copy()),
                   "threshold": nir.Threshold(threshold=below),
                   "reset": nir.Scale(scale=np.full(shape, -theta, dtype=np.float32)),
                   "output": nir.Output(output_type={"output": np.array(shape)})},
            edges=[("input", "integrator"), ("integrator", "threshold"),
                   ("threshold", "output"), ("threshold", "reset"), ("reset", "integrator")],
            metadata={NIR_METADATA_KEY: _clean({**meta, "kind": _SUBTRACT_KIND,
                                         "recurrent_edge": "reset -> integrator, delivered one "
                                         "step later"})},
            type_check=False,
        )
    value = neuron.spike_value()
    spike = nir.Scale(scale=np.full(shape, value, dtype=np.float32))
    return {name: core, f"{name}.spike": spike}


def export_nir(snn: SpikingNetwork, *, input_shape: tuple[int, ...] | None = None) -> Any:
    """The ``nir.NIRGraph`` of ``snn`` (module docstring); ``input_shape`` (C, H, W) defaults to
    the network's. Raises :class:`NirExportError` for what NIR cannot express."""
    nir = _nir()
    if not isinstance(snn, SpikingNetwork):
        raise TypeError(f"export_nir() needs a SpikingNetwork, got {type(snn).__name__}")
    _refuse_method(snn)
    shape = tuple(input_shape or snn.input_shape or ())
    if not shape:
        raise NirExportError("the network's input shape is unknown; pass input_shape=(C, H, W)")
    gm = snn.network
    snn.reset_state()
    snn.set_horizon(1)
    with torch.no_grad():
        first = next(gm.parameters())
        ShapeProp(gm).propagate(torch.zeros(1, *shape, dtype=first.dtype, device=first.device))
    snn.reset_state()

    def out_shape(node: fx.Node) -> tuple[int, ...]:
        return tuple(node.meta["tensor_meta"].shape[1:])

    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    sources: dict[fx.Node, list[str]] = {}  # fx value -> the NIR nodes whose outputs sum to it

    def link(target: str, value: Any) -> None:
        if not isinstance(value, fx.Node) or value not in sources:
            raise NirExportError(f"{target}: its input is not a tensor computed from the image")
        edges.extend((source, target) for source in sources[value])

    for node in gm.graph.nodes:
        key = node.name
        if node.op == "placeholder":
            nodes["input"] = nir.Input(input_type={"input": np.array(shape)})
            sources[node] = ["input"]
        elif node.op == "output":
            (value,) = node.args
            nodes["output"] = nir.Output(output_type={"output": np.array(out_shape(value))})
            link("output", value)
        elif node.op == "call_module":
            module = gm.get_submodule(node.target)
            value = node.args[0]
            if isinstance(module, _PASS_MODULES):
                sources[node] = list(sources[value])
                continue
            if isinstance(module, IFNeuron):
                if len(node.args) > 1:
                    raise NirExportError(f"{node.target}: an IF neuron with two inputs")
                nodes.update(_neuron_nodes(nir, key, module, out_shape(node)))
                link(key, value)
                edges.append((key, f"{key}.spike"))
                sources[node] = [f"{key}.spike"]
                continue
            nodes[key] = _layer_node(nir, node.target, module, out_shape(value))
            link(key, value)
            sources[node] = [key]
        elif node.op == "call_function" and node.target in _ADD and not node.kwargs:
            a, b = node.args
            if not all(isinstance(v, fx.Node) and v in sources for v in (a, b)):
                raise NirExportError(f"{key}: only sums of two computed tensors are exported")
            sources[node] = [*sources[a], *sources[b]]
        elif (node.op == "call_function" and node.target is torch.flatten) or (
                node.op == "call_method" and node.target in ("flatten", "reshape", "view")):
            value = node.args[0]
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            if node.target in ("reshape", "view"):
                start = 1
            if start != 1 or len(out_shape(node)) != 1:
                raise NirExportError(f"{key}: only flattening every dimension after the batch "
                                     "is exported")
            nodes[key] = nir.Flatten(input_type={"input": np.array(out_shape(value))},
                                     start_dim=0, end_dim=-1)
            link(key, value)
            sources[node] = [key]
        elif (node.op == "call_function" and node.target in (operator.mul, torch.mul)
              and not node.kwargs and len(node.args) == 2
              and sum(isinstance(a, int | float) and not isinstance(a, bool)
                      for a in node.args) == 1):
            first = not isinstance(node.args[0], fx.Node)
            value, factor = (node.args[1], node.args[0]) if first else node.args
            nodes[key] = nir.Scale(
                scale=np.full(out_shape(node), factor, dtype=np.float32),
                metadata={NIR_METADATA_KEY: {"factor": float(factor), "scalar_first": first}})
            link(key, value)
            sources[node] = [key]
        elif node.op == "call_method" and node.target in ("size", "dim", "contiguous"):
            if node.target == "contiguous":
                sources[node] = list(sources[node.args[0]])
            continue  # shape arithmetic feeding a reshape: no NIR node
        elif node.op == "call_function" and node.target is getattr:
            continue
        else:
            raise NirExportError(f"{key}: {node.op} {getattr(node.target, '__name__', node.target)}"
                                 " has no NIR counterpart here")
    from .snn_artefact import _constructor_params

    metadata = {NIR_METADATA_KEY: _clean({
        "method": snn.method.name, "params": _constructor_params(snn.method),
        "weight_bits": snn.weight_bits, "input_shape": list(shape),
        "time_step": "one NIR time step = one spikebridge step; dt = 1, r = 1",
        "input_encoding": "direct: the same image is the Input at every step",
    })}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=False)


def _layer_node(nir: Any, name: str, module: nn.Module, in_shape: tuple[int, ...]) -> Any:
    meta: dict[str, Any] = {"layer": type(module).__name__}
    if type(module) is nn.Conv2d:
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise NirExportError(f"{name}: convolution padding {module.padding!r} / "
                                 f"{module.padding_mode!r} is not exported")
        bias = (_array(module.bias) if module.bias is not None
                else np.zeros(module.out_channels, dtype=np.float32))
        meta["bias"] = module.bias is not None
        return nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=_array(module.weight),
                          stride=_pair(module.stride), padding=_pair(module.padding),
                          dilation=_pair(module.dilation), groups=module.groups, bias=bias,
                          metadata={NIR_METADATA_KEY: _clean(meta)})
    if type(module) is nn.Linear:
        if module.bias is None:
            return nir.Linear(weight=_array(module.weight),
                              metadata={NIR_METADATA_KEY: _clean(meta)})
        return nir.Affine(weight=_array(module.weight), bias=_array(module.bias),
                          metadata={NIR_METADATA_KEY: _clean(meta)})
    if type(module) is nn.AvgPool2d:
        if (_pair(module.padding) != 0).any() or module.ceil_mode or module.divisor_override:
            raise NirExportError(f"{name}: average pooling with padding, ceil_mode or a divisor "
                                 "override is not exported")
        stride = module.stride if module.stride is not None else module.kernel_size
        return nir.AvgPool2d(kernel_size=_pair(module.kernel_size), stride=_pair(stride),
                             padding=np.zeros(2, dtype=np.int64),
                             metadata={NIR_METADATA_KEY: _clean(meta)})
    if type(module) is nn.AdaptiveAvgPool2d:
        out = _pair(module.output_size)
        size = np.array(in_shape[1:], dtype=np.int64)
        if (size % out).any():
            raise NirExportError(f"{name}: adaptive pooling from {tuple(size)} to {tuple(out)} "
                                 "has no fixed kernel")
        meta["output_size"] = out.tolist()
        return nir.AvgPool2d(kernel_size=size // out, stride=size // out,
                             padding=np.zeros(2, dtype=np.int64),
                             metadata={NIR_METADATA_KEY: _clean(meta)})
    if type(module) is nn.Flatten:
        if module.start_dim != 1:
            raise NirExportError(f"{name}: only flattening every dimension after the batch is "
                                 "exported")
        return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0,
                           end_dim=module.end_dim if module.end_dim < 0 else module.end_dim - 1,
                           metadata={NIR_METADATA_KEY: _clean(meta)})
    if isinstance(module, (SpikingMaxPool2d, nn.MaxPool2d)):
        raise NirExportError(
            f"{name}: NIR has no max-pooling node (its pooling nodes are SumPool2d and "
            "AvgPool2d), so a network with max-pooling cannot be exported; swap it for average "
            "pooling before fine-tuning: spikebridge.to_qcfs(model, ..., maxpool='avg')")
    raise NirExportError(f"{name}: a {type(module).__name__} layer has no NIR counterpart here")


def for_consumers(graph: Any, *, sum_pooling: bool = True) -> Any:
    """A consumer-compatible copy of an exported graph, for importers with fewer node types.

    * every neuron's ``.spike`` Scale (its spike value, θ for weighted spikes) is folded into
      the weights of the one Conv2d / Affine / Linear it feeds (through pooling and flattening,
      which commute with a scalar);
    * an output Scale (the normalization methods' output factor) is folded into the last Affine;
    * with ``sum_pooling``, every AvgPool2d becomes a SumPool2d with its ``1/(k_h·k_w)`` folded
      forward the same way (Norse reads SumPool2d, not AvgPool2d).

    The result computes the same function in another float order (``conv(θ·s)`` as
    ``conv_{θW}(s)``; the pooling factors are powers of two for 2×2 pools, so exact), and is not
    read back by :func:`load_nir`. Raises :class:`NirExportError` where a factor cannot be
    folded (spikes of several neurons summed before a weighted layer: a residual connection).
    """
    nir = _nir()
    nodes = dict(graph.nodes)
    edges = list(graph.edges)
    weighted = (nir.Conv2d, nir.Affine, nir.Linear)

    def successors(name: str) -> list[str]:
        return [b for a, b in edges if a == name]

    def predecessors(name: str) -> list[str]:
        return [a for a, b in edges if b == name]

    def scaled(node: Any, factor: float, bias: bool) -> Any:
        meta = dict(node.metadata or {})
        if isinstance(node, nir.Conv2d):
            return nir.Conv2d(input_shape=node.input_shape,
                              weight=(node.weight * np.float32(factor)).astype(np.float32),
                              stride=node.stride, padding=node.padding, dilation=node.dilation,
                              groups=node.groups,
                              bias=node.bias * np.float32(factor) if bias else node.bias,
                              metadata=meta)
        if isinstance(node, nir.Affine):
            return nir.Affine(weight=(node.weight * np.float32(factor)).astype(np.float32),
                              bias=node.bias * np.float32(factor) if bias else node.bias,
                              metadata=meta)
        return nir.Linear(weight=(node.weight * np.float32(factor)).astype(np.float32),
                          metadata=meta)

    def fold_forward(start: str, factor: float, what: str) -> None:
        target = start
        while True:
            after = successors(target)
            if len(after) != 1 or len(predecessors(after[0])) != 1:
                raise NirExportError(
                    f"{what}: its output is summed with others (a residual connection) before "
                    "a weighted layer, so its factor cannot be folded into one")
            target = after[0]
            if isinstance(nodes[target], weighted):
                nodes[target] = scaled(nodes[target], factor, bias=False)
                return
            if not isinstance(nodes[target], nir.AvgPool2d | nir.SumPool2d | nir.Flatten):
                raise NirExportError(f"{what}: no weighted layer follows it to fold into")

    if sum_pooling:
        for name in [n for n, node in nodes.items() if isinstance(node, nir.AvgPool2d)]:
            pool = nodes[name]
            nodes[name] = nir.SumPool2d(kernel_size=pool.kernel_size, stride=pool.stride,
                                        padding=pool.padding, metadata=dict(pool.metadata or {}))
            fold_forward(name, 1.0 / float(np.prod(pool.kernel_size)), name)
    for name in [n for n, node in graph.nodes.items() if isinstance(node, nir.Scale)]:
        factor = np.unique(np.asarray(nodes[name].scale))
        if factor.size != 1:
            raise NirExportError(f"{name}: a Scale by different factors cannot be folded")
        if name.endswith(".spike"):
            fold_forward(name, float(factor[0]), name)
        else:  # an output scale: into the weighted layer before it
            (before,) = predecessors(name)
            if not isinstance(nodes[before], weighted) or len(successors(before)) != 1:
                raise NirExportError(f"{name}: no single weighted layer before it to fold into")
            nodes[before] = scaled(nodes[before], float(factor[0]), bias=True)
        (source,) = predecessors(name)
        edges = [(source if a == name else a, b) for a, b in edges if b != name]
        del nodes[name]
    meta = dict(graph.metadata or {})
    meta[NIR_METADATA_KEY] = {**meta.get(NIR_METADATA_KEY, {}),
                              "consumer_profile": "spike values and pooling factors folded into "
                              "the following weights" + ("; AvgPool2d as SumPool2d"
                                                         if sum_pooling else "")}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def write_nir(snn: SpikingNetwork, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Export ``snn`` and write the graph to ``path`` (NIR's HDF5 file), atomically."""
    nir = _nir()
    graph = export_nir(snn, **kwargs)
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


# ---------------------------------------------------------------------------------------------
# reading back


def _meta(node: Any) -> dict:
    meta = getattr(node, "metadata", None) or {}
    value = meta.get(NIR_METADATA_KEY, {})
    return value if isinstance(value, dict) else {}


def _scalar(value: Any) -> Any:
    """A metadata value as a Python scalar (HDF5 hands back numpy scalars and bytes)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, np.generic):
        value = value.item()
    return value.decode() if isinstance(value, bytes) else value


def _ints(value: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in np.atleast_1d(np.asarray(value)))


def _module_for(name: str, node: Any, nir: Any) -> nn.Module:
    meta = {k: _scalar(v) for k, v in _meta(node).items()}
    if isinstance(node, nir.Conv2d):
        weight = torch.from_numpy(np.asarray(node.weight, dtype=np.float32).copy())
        module = nn.Conv2d(weight.shape[1] * int(node.groups), weight.shape[0],
                           tuple(weight.shape[2:]), stride=_ints(node.stride),
                           padding=_ints(node.padding), dilation=_ints(node.dilation),
                           groups=int(node.groups), bias=bool(meta.get("bias", True)))
        module.weight.data.copy_(weight)
        if module.bias is not None:
            module.bias.data.copy_(torch.from_numpy(np.asarray(node.bias, dtype=np.float32)))
        return module
    if isinstance(node, nir.Affine | nir.Linear):
        weight = torch.from_numpy(np.asarray(node.weight, dtype=np.float32).copy())
        module = nn.Linear(weight.shape[1], weight.shape[0], bias=isinstance(node, nir.Affine))
        module.weight.data.copy_(weight)
        if module.bias is not None:
            module.bias.data.copy_(torch.from_numpy(np.asarray(node.bias, dtype=np.float32)))
        return module
    if isinstance(node, nir.AvgPool2d):
        if meta.get("layer") == "AdaptiveAvgPool2d":
            return nn.AdaptiveAvgPool2d(_ints(_meta(node)["output_size"]))
        if (np.asarray(node.padding) != 0).any():
            raise NirExportError(f"{name}: average pooling with padding is not read")
        return nn.AvgPool2d(_ints(node.kernel_size), _ints(node.stride))
    if isinstance(node, nir.Flatten):
        end = int(node.end_dim)
        return nn.Flatten(int(node.start_dim) + 1, end if end < 0 else end + 1)
    raise NirExportError(f"{name}: NIR node {type(node).__name__} is not read here")


def _neuron_for(name: str, node: Any, nir: Any, scale: Any, method: Any) -> IFNeuron:
    meta = {k: _scalar(v) for k, v in _meta(node).items()}
    if isinstance(node, nir.IF):
        reset = "zero"
    elif isinstance(node, nir.NIRGraph) and meta.get("kind") == _SUBTRACT_KIND:
        reset = "subtract"
    else:
        raise NirExportError(f"{name}: {type(node).__name__} is not an IF neuron spikebridge "
                             "exported")
    if "threshold" not in meta:
        raise NirExportError(f"{name}: the neuron's spikebridge metadata (threshold, initial "
                             "potential) is missing; load_nir reads graphs spikebridge exported")
    theta = float(meta["threshold"])
    amplitude = meta.get("amplitude")
    neuron = IFNeuron(theta, float(meta.get("initial_fraction", 0.0)), reset,
                      amplitude=None if amplitude is None or (isinstance(amplitude, float)
                                                              and math.isnan(amplitude))
                      else float(amplitude))
    initial = _meta(node).get("initial_potential")
    if isinstance(initial, np.ndarray) and initial.ndim > 0:  # a per-neuron v(0) (cos-frozen)
        neuron.set_initial_state(torch.from_numpy(initial.astype(np.float32)))
    values = np.unique(np.asarray(scale.scale))
    if values.size != 1 or not math.isclose(float(values[0]), neuron.spike_value(),
                                            rel_tol=1e-6):
        raise NirExportError(f"{name}: its spike Scale ({values[:3]}) does not match the "
                             f"recorded spike value {neuron.spike_value()}")
    return neuron


def load_nir(source: str | os.PathLike[str] | Any) -> SpikingNetwork:
    """Read a NIR graph written by :func:`export_nir` / :func:`write_nir` (a path, or a
    ``nir.NIRGraph``) back into a :class:`SpikingNetwork`, bit-identical in simulation to the
    network that was exported."""
    nir = _nir()
    graph = nir.read(str(source), type_check=False) if isinstance(source, str | os.PathLike) \
        else source
    meta = {k: _scalar(v) for k, v in _meta(graph).items()}
    if "method" not in meta:
        raise NirExportError("this NIR graph was not written by spikebridge (no spikebridge "
                             "metadata); load_nir reads graphs spikebridge exported")
    params = {k: _scalar(v) for k, v in (_meta(graph).get("params") or {}).items()}
    method = get_method(str(meta["method"]), **params)
    incoming: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for source_name, target in graph.edges:
        incoming[target].append(source_name)
    fx_graph = fx.Graph()
    modules: dict[str, nn.Module] = {}
    values: dict[str, fx.Node] = {}
    sources: dict[str, str] = {}
    pending = [n for n in graph.nodes]
    order: list[str] = []
    while pending:  # topological order (the graph is acyclic outside the neurons' sub-graphs)
        ready = [n for n in pending if all(s in order for s in incoming[n])]
        if not ready:
            raise NirExportError("the NIR graph has a cycle outside a neuron")
        order += ready
        pending = [n for n in pending if n not in ready]
    for name in order:
        node = graph.nodes[name]
        inputs = [values[s] for s in incoming[name]]
        current = inputs[0] if inputs else None
        for extra in inputs[1:]:  # fan-in: NIR sums a node's inputs, in edge order
            current = fx_graph.call_function(operator.add, (current, extra))
        safe = f"n{len(modules)}"  # our own names: the file's never reach generated code
        if isinstance(node, nir.Input):
            values[name] = fx_graph.placeholder("x")
        elif isinstance(node, nir.Output):
            fx_graph.output(current)
        elif isinstance(node, nir.IF | nir.NIRGraph):
            spike_name = f"{name}.spike"
            if spike_name not in graph.nodes:
                raise NirExportError(f"{name}: the neuron's spike Scale {spike_name} is missing")
            modules[safe] = _neuron_for(name, node, nir, graph.nodes[spike_name], method)
            sources[safe] = name
            values[name] = fx_graph.call_module(safe, (current,))
        elif isinstance(node, nir.Scale) and name.endswith(".spike"):
            values[name] = current  # folded into the neuron's spike value
        elif isinstance(node, nir.Scale):
            scale_meta = {k: _scalar(v) for k, v in _meta(node).items()}
            factor = scale_meta.get("factor")
            if factor is None:
                found = np.unique(np.asarray(node.scale))
                if found.size != 1:
                    raise NirExportError(f"{name}: a Scale by different factors per element is "
                                         "not read")
                factor = float(found[0])
            args = (factor, current) if scale_meta.get("scalar_first") else (current, factor)
            values[name] = fx_graph.call_function(operator.mul, args)
        else:
            modules[safe] = _module_for(name, node, nir)
            values[name] = fx_graph.call_module(safe, (current,))
    fx_graph.lint()
    gm = fx.GraphModule(modules, fx_graph, class_name="NIRNetwork")
    snn = SpikingNetwork(gm, method, sources)
    snn.weight_bits = meta.get("weight_bits")
    shape = _meta(graph).get("input_shape")
    snn.input_shape = None if shape is None else _ints(shape)
    return snn.eval()
