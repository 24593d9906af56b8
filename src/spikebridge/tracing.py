"""Tracing a model into a torch.fx graph, and the graph edits every pass shares.

The leaf of conversion: :func:`trace` (our activations stay leaves), the error every pass
raises for what has no spiking counterpart (:class:`UnsupportedLayerError`, with the whole list
of :class:`ConversionProblem`), and the two rewrites used by the converter, by
:func:`spikebridge.to_qcfs` and by the operation counters: ``view`` → ``reshape`` and putting a
module in place of a call.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn

from .activations import SPIKING_ACTIVATIONS

__all__ = [
    "ConversionProblem",
    "UnsupportedLayerError",
    "replace_with_module",
    "set_module",
    "trace",
    "views_as_reshapes",
    "where",
]


class UnsupportedLayerError(ValueError):
    """A layer or operation has no spiking counterpart in this converter.

    ``problems`` lists every one found in the model (:func:`check_convertible`), so one error
    names them all."""

    def __init__(self, message: str, problems: Sequence[ConversionProblem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass(frozen=True)
class ConversionProblem:
    """One node of the traced model that cannot be converted: where it is and why."""

    node: str  # the graph node (a module's qualified name, or a call's node name)
    op: str  # the layer type, function or tensor method
    why: str  # the reason and what to do, one or two sentences

    def __str__(self) -> str:
        named = f"'{self.node}'" in self.why or f"{self.node} " in self.why
        return self.why if named else f"{self.node} ({self.op}): {self.why}"


class _Tracer(fx.Tracer):
    """Keeps our activations (and every torch.nn layer) as leaves of the traced graph."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, SPIKING_ACTIVATIONS):
            return True
        return super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model`` (in eval mode) into a GraphModule, with a clear error."""
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, ...)
        raise UnsupportedLayerError(
            f"could not trace {type(model).__name__} with torch.fx: {exc}. The converter needs "
            "a model without data-dependent Python control flow in forward()."
        ) from exc
    return fx.GraphModule(model, graph, model.__class__.__name__)


def views_as_reshapes(gm: fx.GraphModule) -> None:
    """Rewrite every ``x.view(shape)`` of the graph as ``x.reshape(shape)``.

    The two give the same values; ``view`` additionally demands strides it can reinterpret, which
    the SNN's channels_last activations (and its time-folded batches) do not have, so the ANN's
    ``x.view(B, -1)`` would fail inside the traced network with a stride error. ``reshape``
    copies only where a view is impossible. ``x.view(dtype)`` is left alone.
    """
    for node in gm.graph.nodes:
        if node.op == "call_method" and node.target == "view" and not any(
                isinstance(a, torch.dtype) for a in (*node.args[1:], *node.kwargs.values())):
            node.target = "reshape"
    gm.recompile()


def set_module(root: nn.Module, qualname: str, module: nn.Module) -> None:
    parent_name, _, child = qualname.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def replace_with_module(gm: fx.GraphModule, node: fx.Node, module: nn.Module, base: str,
                        taken: Container[str] = ()) -> str:
    """Add ``module`` under the first free name ``base``, ``base2``, … (not an attribute of
    ``gm``, not in ``taken``) and make it replace the call ``node``, fed by the node's input;
    returns the name. Every call site of an activation gets its own module this way."""
    name, k = base, 1
    while hasattr(gm, name) or name in taken:
        k += 1
        name = f"{base}{k}"
    gm.add_submodule(name, module)
    current = node.args[0] if node.args else node.kwargs.get("input")
    with gm.graph.inserting_after(node):
        new_node = gm.graph.call_module(name, (current,))
    node.replace_all_uses_with(new_node)
    gm.graph.erase_node(node)
    return name


def where(node: fx.Node) -> str:
    """Human-readable location of a node: the module it came from, if fx recorded it."""
    stack = node.meta.get("nn_module_stack")
    if stack:
        path = list(stack.values())[-1]
        name = path[0] if isinstance(path, tuple) else path
        return f" (inside module {name!r})"
    return ""
