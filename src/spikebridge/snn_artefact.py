"""A converted SNN saved as a directory and loaded back, bit for bit (docs/export.md).

``save_snn(snn, D)`` writes what simulating the SNN needs and nothing that would have to be
executed to read it:

* ``model.safetensors`` — every tensor of the converted network: the BatchNorm-folded (and
  normalized, quantized) weights and biases, each IF neuron's threshold θ;
* ``config.json`` — the conversion method and its parameters, what a data-based method measured
  (its layer scales; so loading needs no calibration data), the weight bits, every neuron's
  parameters (θ, v(0)/θ or a per-neuron v(0) tensor, reset kind, spike amplitude, ECC's
  residual-current fraction η, the negative threshold of signed neurons, whether it calibrates
  per sample), the graph as a
  declarative node list, the ANN's data description (dataset, input size, normalization, test
  fingerprint) and the SHA-256 of the ANN checkpoint it came from;
* ``manifest.json`` — the SHA-256 of both, written with the crash-consistent commit of
  :class:`spikebridge.checkpoint.CheckpointWriter` (a kill leaves the old SNN or the new one).

The graph is stored as data, not code: each node names an op from a closed list — the layer
types, functions and tensor methods :func:`spikebridge.convert` admits — with its arguments, so
reading a file never runs anything it contains (no pickle, no ``exec``). COS calibrates each
sample's initial potentials at run time; its saved SNN is the network before calibration plus
ρ, iterations and variant, and the loaded SNN calibrates every sample exactly as the original.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import keyword
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from .checkpoint import (
    MANIFEST_FILE,
    MODEL_FILE,
    CheckpointError,
    CheckpointWriter,
    read_checkpoint,
)
from .convert import (
    _DROPOUT_FUNCTIONS,
    _LINEAR_FUNCTIONS,
    _LINEAR_METHODS,
    _MAXPOOL2D_FUNCTIONS,
    _SCALING_FUNCTIONS,
)
from .methods import get_method
from .network import SpikingNetwork
from .neurons import IFNeuron
from .spiking_maxpool import SpikingMaxPool2d

__all__ = ["SNN_FORMAT", "SNN_KIND", "SnnFormatError", "is_snn_config", "load_snn", "save_snn"]

SNN_KIND = "spikebridge-snn"
SNN_FORMAT = "spikebridge-snn/1"


class SnnFormatError(CheckpointError):
    """A saved SNN whose description cannot be rebuilt (unknown op, layer or field)."""


def is_snn_config(config: dict) -> bool:
    """Whether a directory's ``config.json`` describes a converted SNN (not an ANN)."""
    return config.get("kind") == SNN_KIND


# ---------------------------------------------------------------------------------------------
# the closed vocabulary of the graph


def _function_key(fn: Any) -> str:
    return f"{getattr(fn, '__module__', None) or 'torch'}.{fn.__name__}"


_FUNCTIONS = {_function_key(f): f
              for f in (*_LINEAR_FUNCTIONS, *_SCALING_FUNCTIONS, *_DROPOUT_FUNCTIONS,
                        *_MAXPOOL2D_FUNCTIONS)}
_ATTRIBUTES = frozenset({"shape", "ndim", "dtype", "device"})
_METHODS = frozenset(_LINEAR_METHODS) | {"mul", "div", "__mul__", "__truediv__"}

# layer type -> the constructor arguments read back from its attributes
_LAYERS: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    **{cls.__name__: (cls, ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                            "dilation", "groups", "padding_mode"))
       for cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d)},
    "Linear": (nn.Linear, ("in_features", "out_features")),
    "AvgPool1d": (nn.AvgPool1d, ("kernel_size", "stride", "padding", "ceil_mode",
                                 "count_include_pad")),
    **{cls.__name__: (cls, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                            "divisor_override"))
       for cls in (nn.AvgPool2d, nn.AvgPool3d)},
    **{cls.__name__: (cls, ("output_size",))
       for cls in (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)},
    # max-pooling: the spiking one (time-varying input) and the plain one (constant input)
    **{cls.__name__: (cls, ("kernel_size", "stride", "padding", "dilation", "ceil_mode"))
       for cls in (nn.MaxPool2d, SpikingMaxPool2d)},
    "Flatten": (nn.Flatten, ("start_dim", "end_dim")),
    "Unflatten": (nn.Unflatten, ("dim", "unflattened_size")),
    "Identity": (nn.Identity, ()),
    **{cls.__name__: (cls, ("p",))
       for cls in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)},
    **{cls.__name__: (cls, ("num_features", "eps", "momentum", "affine",
                            "track_running_stats"))
       for cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)},
}
_BIASED = ("Conv1d", "Conv2d", "Conv3d", "Linear")


def _encode(value: Any) -> Any:
    """An fx argument as JSON: node references, tuples and slices are tagged objects."""
    if isinstance(value, fx.Node):
        return {"node": value.name}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, slice):
        return {"slice": [_encode(value.start), _encode(value.stop), _encode(value.step)]}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise SnnFormatError(f"cannot save a graph argument of type {type(value).__name__} "
                         f"({value!r})")


def _decode(value: Any, nodes: dict[str, fx.Node]) -> Any:
    if isinstance(value, list):
        return [_decode(v, nodes) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"node"}:
        if value["node"] not in nodes:
            raise SnnFormatError(f"the graph uses node {value['node']!r} before defining it")
        return nodes[value["node"]]
    if set(value) == {"tuple"}:
        return tuple(_decode(v, nodes) for v in value["tuple"])
    if set(value) == {"slice"}:
        return slice(*(_decode(v, nodes) for v in value["slice"]))
    if set(value) == {"dtype"}:
        dtype = getattr(torch, str(value["dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise SnnFormatError(f"unknown dtype {value['dtype']!r}")
        return dtype
    if set(value) == {"memory_format"}:
        fmt = getattr(torch, str(value["memory_format"]), None)
        if not isinstance(fmt, torch.memory_format):
            raise SnnFormatError(f"unknown memory format {value['memory_format']!r}")
        return fmt
    raise SnnFormatError(f"unknown graph argument {value!r}")


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _layer_record(module: nn.Module) -> dict:
    kind = type(module).__name__
    if kind == "IFNeuron":
        negative = module.negative
        return {"type": "IFNeuron", "threshold": float(module.threshold),
                "initial_fraction": module.initial_fraction, "reset": module.reset,
                "amplitude": module.amplitude, "residual": module.residual,
                "negative_threshold": None if negative is None else negative[0],
                "negative_amplitude": None if negative is None else negative[1],
                "memory": module.memory,
                "calibrated": module.calibration is not None,
                "initial_state": (None if module.initial_state is None
                                  else list(module.initial_state.shape))}
    if kind not in _LAYERS or type(module) is not _LAYERS[kind][0]:
        raise SnnFormatError(f"cannot save a {type(module).__name__} layer (a saved SNN holds "
                             f"{', '.join(sorted(_LAYERS))} and IF neurons)")
    record = {"type": kind}
    for name in _LAYERS[kind][1]:
        record[name] = _json_value(getattr(module, name))
    if kind in _BIASED:
        record["bias"] = module.bias is not None
    return record


def _build_layer(name: str, record: dict, method: Any) -> nn.Module:
    kind = record.get("type")
    if kind == "IFNeuron":
        calibration = getattr(method, "calibration", None) if record.get("calibrated") else None
        if record.get("calibrated") and calibration is None:
            raise SnnFormatError(f"neuron {name} calibrates per sample, but method "
                                 f"{method.name!r} has no calibration")
        neuron = IFNeuron(record["threshold"], record["initial_fraction"], record["reset"],
                          calibration, amplitude=record["amplitude"],
                          residual=record["residual"],
                          negative_threshold=record["negative_threshold"],
                          negative_amplitude=record["negative_amplitude"],
                          memory=bool(record.get("memory", False)))
        if record.get("initial_state") is not None:  # filled from the weights file
            neuron.set_initial_state(torch.empty([int(d) for d in record["initial_state"]],
                                                 device="meta"))
        return neuron
    if kind not in _LAYERS:
        raise SnnFormatError(f"layer {name} has unknown type {kind!r}")
    cls, fields = _LAYERS[kind]
    kwargs = {f: tuple(record[f]) if isinstance(record[f], list) else record[f] for f in fields}
    if kind in _BIASED:
        kwargs["bias"] = bool(record["bias"])
    with torch.device("meta"):  # shapes only: the weights file fills every tensor
        return cls(**kwargs)


def _graph_records(gm: fx.GraphModule) -> list[dict]:
    records = []
    for node in gm.graph.nodes:
        record: dict[str, Any] = {"op": node.op, "name": node.name}
        if node.op in ("placeholder", "output"):
            record["target"] = str(node.target)
        elif node.op == "call_module":
            record["target"] = str(node.target)
        elif node.op == "call_function":
            key = _function_key(node.target)
            if _FUNCTIONS.get(key) is not node.target:
                raise SnnFormatError(f"cannot save a call of {key} (node {node.name})")
            record["target"] = key
        elif node.op == "call_method":
            if node.target not in _METHODS:
                raise SnnFormatError(f"cannot save a call of the tensor method {node.target!r} "
                                     f"(node {node.name})")
            record["target"] = node.target
        else:
            raise SnnFormatError(f"cannot save a graph node of kind {node.op!r} ({node.name}); "
                                 "constants inside the graph are not supported")
        record["args"] = _encode(tuple(node.args))["tuple"]
        record["kwargs"] = {k: _encode(v) for k, v in node.kwargs.items()}
        records.append(record)
    return records


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUALIFIED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+))*")


def _checked_name(value: Any, what: str, pattern: re.Pattern = _NAME) -> str:
    """A node or layer name from the file, refused unless it is a plain identifier: torch.fx
    writes these names into the Python source it generates and executes."""
    if not isinstance(value, str) or not pattern.fullmatch(value) or any(
            keyword.iskeyword(part) for part in value.split(".")):
        raise SnnFormatError(f"{what} {value!r} is not a plain identifier")
    return value


def _rebuild_graph(records: list[dict], modules: dict[str, nn.Module]) -> fx.Graph:
    graph = fx.Graph()
    nodes: dict[str, fx.Node] = {}
    for record in records:
        op, name, target = record.get("op"), record.get("name"), record.get("target")
        _checked_name(name, "node name")
        if op in ("placeholder", "output"):
            _checked_name(target, f"{op} target")
        elif op == "call_module":
            _checked_name(target, "layer name", _QUALIFIED)
        args = tuple(_decode(record.get("args", []), nodes))
        kwargs = {k: _decode(v, nodes) for k, v in record.get("kwargs", {}).items()}
        if op == "placeholder":
            node = graph.placeholder(target)
        elif op == "output":
            node = graph.output(args[0])
        elif op == "call_module":
            if target not in modules:
                raise SnnFormatError(f"node {name} calls the undefined layer {target!r}")
            node = graph.call_module(target, args, kwargs)
        elif op == "call_function":
            if target == "builtins.getattr" and (len(args) < 2 or args[1] not in _ATTRIBUTES):
                raise SnnFormatError(f"node {name} reads an attribute other than "
                                     f"{', '.join(sorted(_ATTRIBUTES))}")
            if target not in _FUNCTIONS:
                raise SnnFormatError(f"node {name} calls {target!r}, which a saved SNN may not "
                                     "use")
            node = graph.call_function(_FUNCTIONS[target], args, kwargs)
        elif op == "call_method":
            if target not in _METHODS:
                raise SnnFormatError(f"node {name} calls the tensor method {target!r}, which a "
                                     "saved SNN may not use")
            node = graph.call_method(target, args, kwargs)
        else:
            raise SnnFormatError(f"node {name} is of unknown kind {op!r}")
        node.name = name
        nodes[name] = node
    graph.lint()
    return graph


# ---------------------------------------------------------------------------------------------
# save / load


def _jsonable(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_jsonable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _jsonable(v) for k, v in value.items())
    return False


def _constructor_params(method: Any) -> dict:
    """The parameters ``get_method(name, **them)`` takes back (``params()`` may report more: a
    preset such as maxnorm fixes the rest)."""
    accepted = set(inspect.signature(type(method).__init__).parameters) - {"self"}
    return {k: v for k, v in method.params().items() if k in accepted}


def _jsonable_copy(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def _method_state(method: Any) -> dict:
    """What a method learned while converting (e.g. a data-based method's layer scales)."""
    params = method.params()
    return {k: v for k, v in vars(method).items()
            if not k.startswith("_") and k not in params and _jsonable(v)}


def _source_description(snn: SpikingNetwork, ann_config: dict | None) -> dict:
    """The ANN fields the CLI needs to open the right test set and check it."""
    shape = snn.input_shape
    linears = [m for m in snn.network.modules() if isinstance(m, nn.Linear)]
    base = {
        "architecture": type(snn.network).__name__,
        "num_classes": int(linears[-1].out_features) if linears else 1,
        "in_channels": int(shape[0]) if shape else 1,
        "activation": {"kind": "unknown"},
    }
    if ann_config is None:
        return base
    keep = ("architecture", "num_classes", "in_channels", "model_kwargs", "activation",
            "dataset", "classes", "normalization", "input_size", "test_fingerprint",
            "test_accuracy")
    return {**base, **{k: ann_config[k] for k in keep if k in ann_config}}


def save_snn(
    snn: SpikingNetwork, directory: str | os.PathLike[str], *, ann_config: dict | None = None,
    source: str | os.PathLike[str] | None = None, overwrite: bool = False,
    conversion: dict | None = None,
) -> Path:
    """Write ``snn`` to the directory ``directory`` (module docstring); returns it.

    ``ann_config``: the ``config.json`` of the ANN checkpoint it was converted from (its dataset,
    normalization and test fingerprint let ``evaluate --snn D`` open and check the right test
    set); ``source``: that checkpoint's directory, whose manifest hash is recorded;
    ``conversion``: extra facts to record (e.g. the number of calibration samples);
    ``overwrite``: replace an SNN (or checkpoint) already in ``directory``.

    Raises :class:`SnnFormatError` for a network holding a layer or op outside the saved
    vocabulary, and :class:`~spikebridge.checkpoint.CheckpointError` for an output directory
    that cannot be written (nothing is left half-written).
    """
    if not isinstance(snn, SpikingNetwork):
        raise TypeError(f"save_snn() needs a SpikingNetwork from spikebridge.convert(), got "
                        f"{type(snn).__name__}")
    gm = snn.network
    layers = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target not in layers:
            layers[node.target] = _layer_record(gm.get_submodule(node.target))
    origin: dict[str, Any] = {}
    if source is not None:
        manifest = Path(source) / MANIFEST_FILE
        if manifest.is_file():
            origin["manifest_sha256"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
        origin["directory"] = str(source)
    state = {k: v for k, v in gm.state_dict().items()}
    config = {
        **_source_description(snn, ann_config),
        "kind": SNN_KIND,
        "format": SNN_FORMAT,
        "snn": {
            "method": snn.method.name,
            "params": _constructor_params(snn.method),
            "all_params": snn.method.params(),
            "method_state": _method_state(snn.method),
            "weight_bits": snn.weight_bits,
            "input_shape": None if snn.input_shape is None else list(snn.input_shape),
            "sources": dict(snn.sources),
            "layers": layers,
            "graph": _graph_records(gm),
            "conversion": dict(conversion or {}),
        },
        "source": origin,
    }
    with CheckpointWriter(directory, overwrite=overwrite) as writer:
        writer.commit(state, config)
    return Path(directory)


def load_snn(
    directory: str | os.PathLike[str], device: str | torch.device = "cpu", *,
    allow_unverified: bool | None = None,
) -> SpikingNetwork:
    """Load an SNN written by :func:`save_snn` (every file's SHA-256 checked, as for
    checkpoints); no calibration data or ANN is needed. The directory's ``config.json`` is
    available as ``snn.config``."""
    ckpt = read_checkpoint(directory, allow_unverified=allow_unverified)
    config = ckpt.config
    if not is_snn_config(config):
        raise CheckpointError(f"{directory} holds an ANN checkpoint, not a converted SNN; "
                              "convert it first (spikebridge convert --model "
                              f"{directory} --method NAME --out SNN_DIR)")
    if config.get("format") != SNN_FORMAT:
        raise SnnFormatError(f"{directory} is a saved SNN of format {config.get('format')!r}; "
                             f"this spikebridge reads {SNN_FORMAT!r}")
    try:
        desc = config["snn"]
        method = get_method(desc["method"], **desc["params"])
        if _jsonable_copy(method.params()) != desc.get("all_params", desc["params"]):
            raise SnnFormatError(
                f"{directory}: method {desc['method']!r} rebuilt from {desc['params']} has the "
                f"parameters {method.params()}, not the saved {desc.get('all_params')} (saved by "
                "a spikebridge whose defaults differ?)")
        for key, value in desc.get("method_state", {}).items():
            setattr(method, key, value)
        modules = {_checked_name(name, "layer name", _QUALIFIED): _build_layer(name, record,
                                                                             method)
                   for name, record in desc["layers"].items()}
        graph = _rebuild_graph(desc["graph"], modules)
        gm = fx.GraphModule(modules, graph, class_name="SavedSNN")
    except CheckpointError:
        raise
    except Exception as exc:  # any malformed description is wrong input, not our bug
        raise SnnFormatError(f"{directory}/config.json does not describe an SNN we can "
                             f"rebuild: {type(exc).__name__}: {exc}") from exc
    expected = {k: tuple(v.shape) for k, v in gm.state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in ckpt.state_dict.items()}
    if expected != stored:  # checked on the meta device: nothing allocated yet
        missing = sorted(set(expected) - set(stored))[:3]
        extra = sorted(set(stored) - set(expected))[:3]
        wrong = sorted(k for k in set(expected) & set(stored) if expected[k] != stored[k])[:3]
        raise SnnFormatError(f"{directory}/{MODEL_FILE} does not fit the saved graph (missing "
                             f"{missing}, unexpected {extra}, other shape {wrong})")
    gm = gm.to_empty(device="cpu")
    try:
        gm.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        raise SnnFormatError(f"{directory}/{MODEL_FILE} does not fit the saved graph: "
                             f"{exc}") from exc
    snn = SpikingNetwork(gm, method, desc["sources"])
    snn.weight_bits = desc.get("weight_bits")
    shape = desc.get("input_shape")
    snn.input_shape = None if shape is None else tuple(int(s) for s in shape)
    snn.config = config
    return snn.to(device).eval()

