r"""Offset-spike analysis (docs/methods.md §4.1, §4.8): how many spikes each IF neuron is off.

For neuron :math:`i` of IF layer :math:`l`, on one input sample (Definition 1):

.. math::
    \psi^l_i = \frac{a^l_i}{\theta^l}\,T - \sum_{t=1}^{T} s^l_i(t)

with :math:`a^l` the ANN activation (QCFS output) on the same sample. With a QCFS ANN and
``T = L``, :math:`\psi` is an integer; :math:`\psi = -1` means one spike too many.

Statistics per layer: the distribution of ψ (rounded to the nearest integer), the **Ratio**
(share of neurons with ψ = 0, compared with a tolerance of 0.01 spikes as the reference code
does), :math:`\mathrm{MSE}_{count} = \overline{\psi^2}` and
:math:`\mathrm{MSE}_{rate} = \mathrm{MSE}_{count}/T^2` (§4.8). The "output layer" of the COS
paper's Table 3 is the last IF layer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .deprecation import moved_names
from .network import SpikingNetwork
from .simulate import check_steps, correct_over_time, layer_chunk_size, simulate

__all__ = [
    "LayerOffsets",
    "OffsetReport",
    "analyse_offsets",
    "offset_spikes",
]

HISTOGRAM_RANGE = 5  # ψ in [-5, 5]; values beyond are counted in the end bins
MATCH_TOLERANCE = 0.01  # spikes; the reference code's tolerance for "exact"


def _capture(modules: dict[str, nn.Module], store: dict[str, torch.Tensor]) -> list:
    handles = []
    for name, module in modules.items():
        def hook(_m, _inp, out, name=name):
            store[name] = out.detach()
        handles.append(module.register_forward_hook(hook))
    return handles


def offset_spikes(
    ann: nn.Module, snn: SpikingNetwork, x: torch.Tensor, steps: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """ψ for every IF layer on batch ``x`` (Definition 1), and the SNN outputs ``[T, B, K]``.

    Returns ``{neuron name: ψ [B, ...]}`` in forward order. The ANN activation of each layer is
    read from the module the neuron replaced (``snn.sources``), so the ANN must be the model
    ``snn`` was converted from.
    """
    steps = check_steps(steps)
    ann_modules = dict(ann.named_modules())
    missing = [src for src in snn.sources.values() if src not in ann_modules]
    if missing:
        raise ValueError(
            f"offset analysis needs activation modules in the ANN; {missing} are functional "
            "calls (F.relu) or not part of this ANN"
        )
    shared = sorted(src for src, n in Counter(snn.sources.values()).items() if n > 1)
    if shared:
        raise ValueError(
            f"offset analysis reads each neuron's ANN activation from the module it replaced, "
            f"but {shared} is called more than once in the ANN; give every call its own module"
        )
    # simulate() would split a large batch into chunks, and the hooks below would only see the
    # last one: chunk here instead, the same way.
    chunk = layer_chunk_size(snn.frames_needed(steps))
    activations = {name: ann_modules[src] for name, src in snn.sources.items()}
    parts = [_offsets_of_batch(ann, activations, snn, part, steps) for part in x.split(chunk)]
    offsets = {name: torch.cat([p[0][name] for p in parts]) for name in parts[0][0]}
    return offsets, torch.cat([p[1] for p in parts], dim=1)


def _offsets_of_batch(
    ann: nn.Module, activations: dict[str, nn.Module], snn: SpikingNetwork, x: torch.Tensor,
    steps: int,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """ψ on one chunk; ``activations`` maps each neuron name to the ANN module it replaced."""
    neurons = snn.neurons()
    ann_out: dict[str, torch.Tensor] = {}
    snn_out: dict[str, torch.Tensor] = {}
    handles = _capture(activations, ann_out)
    try:
        with torch.inference_mode():
            ann.eval()(x)
    finally:
        for h in handles:
            h.remove()
    handles = _capture(neurons, snn_out)
    try:
        outputs = simulate(snn, x, steps, mode="layer")
    finally:
        for h in handles:
            h.remove()
    frames = snn.frames_needed(steps)
    batch = x.shape[0]
    offsets = {}
    for name, neuron in neurons.items():
        theta = float(neuron.threshold)
        spikes = snn_out[name].view(frames, batch, *snn_out[name].shape[1:])[:steps]
        count = spikes.sum(dim=0) / theta
        desired = ann_out[name] / theta * steps
        offsets[name] = desired - count
    return offsets, outputs


@dataclass
class LayerOffsets:
    """Accumulated ψ statistics of one IF layer."""

    histogram: torch.Tensor = field(default_factory=lambda: torch.zeros(2 * HISTOGRAM_RANGE + 1,
                                                                       dtype=torch.long))
    matches: int = 0
    squared_sum: float = 0.0
    count: int = 0

    def add(self, psi: torch.Tensor) -> None:
        flat = psi.flatten().double()
        rounded = flat.round().clamp(-HISTOGRAM_RANGE, HISTOGRAM_RANGE).long() + HISTOGRAM_RANGE
        self.histogram += torch.bincount(rounded.cpu(), minlength=2 * HISTOGRAM_RANGE + 1)
        self.matches += int((flat.abs() < MATCH_TOLERANCE).sum())
        self.squared_sum += float((flat * flat).sum())
        self.count += flat.numel()

    def summary(self, steps: int) -> dict[str, Any]:
        n = max(self.count, 1)
        mse = self.squared_sum / n
        return {
            "ratio": self.matches / n,
            "mse_count": mse,
            "mse_rate": mse / steps**2,
            "distribution": {
                str(k - HISTOGRAM_RANGE): int(v) / n for k, v in enumerate(self.histogram.tolist())
            },
            "neurons": self.count,
        }


@dataclass
class OffsetReport:
    """ψ statistics of every IF layer for one method setting, plus the SNN's accuracy at T."""

    steps: int
    method: dict[str, Any]
    layers: dict[str, dict[str, Any]]
    accuracy: float
    n_samples: int

    @property
    def output_layer(self) -> dict[str, Any]:
        return self.layers[list(self.layers)[-1]]

    def to_dict(self) -> dict[str, Any]:
        return {"T": self.steps, "method": self.method, "accuracy": self.accuracy,
                "n_samples": self.n_samples, "output_layer": list(self.layers)[-1],
                "layers": self.layers}


def analyse_offsets(
    ann: nn.Module,
    snn: SpikingNetwork,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    *,
    progress: bool = False,
    description: str = "offset spikes",
) -> OffsetReport:
    """Accumulate ψ statistics of every IF layer of ``snn`` over ``batches`` at ``T = steps``."""
    layers: dict[str, LayerOffsets] = {name: LayerOffsets() for name in snn.neurons()}
    correct = n = 0
    device = next((p.device for p in ann.parameters()), torch.device("cpu"))
    snn.to(device)
    total = len(batches) if hasattr(batches, "__len__") else None
    for x, y in tqdm(batches, total=total, desc=description, disable=not progress, leave=False):
        x, y = x.to(device), y.to(device)  # batches come from the CPU; the ANN may be on a GPU
        offsets, outputs = offset_spikes(ann, snn, x, steps)
        for name, psi in offsets.items():
            layers[name].add(psi)
        correct += int(correct_over_time(outputs, y)[-1])
        n += int(y.shape[0])
    if n == 0:
        raise ValueError("offset analysis got no samples")
    return OffsetReport(
        steps=steps,
        method={"method": snn.method.name, **snn.method.params()},
        layers={name: stats.summary(steps) for name, stats in layers.items()},
        accuracy=correct / n,
        n_samples=n,
    )


#: Moved up to the experiment layer in 0.2 (it converts and evaluates); kept here as a
#: deprecated alias for one release, looked up on first use.
MOVED_IN_0_2 = {"compare_iterations": "spikebridge.experiments"}


__getattr__ = moved_names(__name__, MOVED_IN_0_2)
