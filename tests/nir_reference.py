"""An independent executor of NIR graphs, written from NIR's documented semantics (not from our
simulator): the oracle our exports are checked against (tests/test_nir_export.py).

Discrete time, one step per call, dt = 1:

* a node's input is the sum of its predecessors' outputs at this step; an edge that closes a
  cycle (inside a neuron's sub-graph) delivers the previous step's output (0 at step 1);
* ``IF``: ``v += r·I``; ``z = v > v_threshold``; ``v = v_reset`` where ``z``; output ``z``;
* ``I``: ``v += r·I``; output ``v``;  ``Threshold``: output ``I > threshold``;
* ``Scale``: ``I ⊙ s``; ``Affine``: ``W I + b``; ``Linear``: ``W I``; ``Conv2d``, ``AvgPool2d``,
  ``SumPool2d``, ``Flatten`` as their names say; ``Input`` / ``Output`` pass data in and out.

Initial states are 0 — unless ``initial_states`` is set, when a neuron's
``spikebridge.initial_potential`` metadata starts its state (what a consumer that reads our
metadata would do).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _meta(node) -> dict:
    return (getattr(node, "metadata", None) or {}).get("spikebridge", {})


class NirExecutor:
    def __init__(self, graph, *, initial_states: bool = True) -> None:
        import nir

        self.nir, self.graph, self.initial_states = nir, graph, initial_states
        self.order, self.back_edges = self._order(graph)
        self.state: dict[int, torch.Tensor] = {}
        self.previous: dict[tuple[int, str], torch.Tensor] = {}

    @staticmethod
    def _order(graph):
        incoming = {name: [] for name in graph.nodes}
        for a, b in graph.edges:
            incoming[b].append(a)
        order, seen, back = [], set(), set()

        def visit(name, stack):
            if name in seen:
                return
            stack = stack | {name}
            for source in incoming[name]:
                if source in stack:
                    back.add((source, name))
                    continue
                visit(source, stack)
            seen.add(name)
            order.append(name)

        # from the outputs backwards: an edge closing a cycle is then the one leaving the node
        # the output depends on now (the threshold), i.e. the feedback edge is the delayed one
        import nir

        starts = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
        for name in [*starts, *graph.nodes]:
            visit(name, frozenset())
        return order, back

    def reset(self) -> None:
        self.state.clear()
        self.previous.clear()

    def step(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.graph, x, ())

    def _run(self, graph, x, path):
        outputs: dict[str, torch.Tensor] = {}
        order, back = (self.order, self.back_edges) if not path else self._order(graph)
        incoming = {name: [] for name in graph.nodes}
        for a, b in graph.edges:
            incoming[b].append(a)
        result = None
        for name in order:
            node = graph.nodes[name]
            terms = []
            for source in incoming[name]:
                if (source, name) in back:
                    key = (*path, source)
                    terms.append(self.previous.get(key))
                else:
                    terms.append(outputs[source])
            terms = [t for t in terms if t is not None]
            total = None
            for term in terms:
                total = term if total is None else total + term
            out = self._node(node, name, total, x, path)
            outputs[name] = out
            if isinstance(node, self.nir.Output):
                result = out
        for source, _target in back:
            self.previous[(*path, source)] = outputs[source]
        return result

    def _node(self, node, name, i, x, path):
        nir = self.nir
        key = (*path, name)
        if isinstance(node, nir.Input):
            return x  # the (sub-)graph's input
        if i is None:  # only a delayed edge feeds it, and this is the first step
            return None
        if isinstance(node, nir.Output):
            return i
        if isinstance(node, nir.NIRGraph):
            sub_input = i
            inner = self._run_sub(node, sub_input, key)
            return inner
        if isinstance(node, nir.Affine):
            return F.linear(i, torch.as_tensor(node.weight), torch.as_tensor(node.bias))
        if isinstance(node, nir.Linear):
            return F.linear(i, torch.as_tensor(node.weight))
        if isinstance(node, nir.Conv2d):
            return F.conv2d(i, torch.as_tensor(node.weight), torch.as_tensor(node.bias),
                            stride=tuple(np.atleast_1d(node.stride).tolist()) * (
                                2 // np.atleast_1d(node.stride).size),
                            padding=tuple(np.atleast_1d(node.padding).tolist()) * (
                                2 // np.atleast_1d(node.padding).size),
                            dilation=tuple(np.atleast_1d(node.dilation).tolist()) * (
                                2 // np.atleast_1d(node.dilation).size),
                            groups=int(node.groups))
        if isinstance(node, nir.AvgPool2d):
            return F.avg_pool2d(i, tuple(int(k) for k in node.kernel_size),
                                tuple(int(s) for s in node.stride))
        if isinstance(node, nir.SumPool2d):
            kernel = tuple(int(k) for k in node.kernel_size)
            return F.avg_pool2d(i, kernel, tuple(int(s) for s in node.stride),
                                divisor_override=1)
        if isinstance(node, nir.Flatten):
            return torch.flatten(i, int(node.start_dim) + 1,
                                 int(node.end_dim) if node.end_dim < 0 else int(node.end_dim) + 1)
        if isinstance(node, nir.Scale):
            return i * torch.as_tensor(node.scale)
        if isinstance(node, nir.Threshold):
            return (i > torch.as_tensor(node.threshold)).to(i.dtype)
        if isinstance(node, nir.I):
            v = self._state(key, node, i, path)
            v = v + torch.as_tensor(node.r) * i
            self.state[key] = v
            return v
        if isinstance(node, nir.IF):
            v = self._state(key, node, i, path)
            v = v + torch.as_tensor(node.r) * i
            z = v > torch.as_tensor(node.v_threshold)
            self.state[key] = torch.where(z, torch.as_tensor(node.v_reset), v)
            return z.to(i.dtype)
        raise NotImplementedError(type(node).__name__)

    def _run_sub(self, graph, i, path):
        self._sub_meta = _meta(graph)
        return self._run(graph, i, path)

    def _state(self, key, node, like, path):
        if key in self.state:
            return self.state[key]
        meta = _meta(node) or (getattr(self, "_sub_meta", {}) if path else {})
        v0 = meta.get("initial_potential", 0.0) if self.initial_states else 0.0
        return torch.as_tensor(np.asarray(v0), dtype=like.dtype).expand_as(like).clone()

    def run(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        """``[steps, B, K]``: the Output at every step for the image ``x`` shown at each."""
        self.reset()
        return torch.stack([self.step(x) for _ in range(steps)])
