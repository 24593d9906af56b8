r"""Calibration data and the ANN activation statistics data-based normalization needs.

Data-based normalization (docs/methods.md §7.3 and §7.9) sets each layer's scale
:math:`\lambda_n` to the :math:`p`-th percentile of the non-zero activations of that layer over
(a subset of) the training set, as Rueckauer's toolbox does (``zeros=True`` counts zeros too):
:math:`p = 100` is the maximum (Rueckauer's "max-norm", ECC), :math:`p = 99.9` the "robust"
choice. The percentile uses the nearest-rank definition: with :math:`n` values sorted
ascending, :math:`\lambda = x_{(\lceil p n / 100\rceil)}`. It is computed exactly while streaming
over the data by keeping only the :math:`k = n - \lceil pn/100\rceil + 1` largest values seen so far
(:math:`k = 1` for the maximum), so memory stays bounded by the tail, not by the data set.

**Sequence input** (event frames ``[T, B, ...]``, ``CalibrationData(input="sequence")``): the
ANN statistics are taken on the *rate input* :math:`\bar x = \frac{1}{T}\sum_{t=1}^{T} x_t`
(:func:`rate_input`, :meth:`CalibrationData.images`) — the constant image whose ANN
activations the SNN's firing rates approximate over the T frames (the rate identity,
docs/methods.md §2.4: a layer's mean input current over the window is the current of
:math:`\bar x`). Methods that simulate the SNN on the calibration data (threshold balancing,
frozen COS) take the frames themselves (:meth:`CalibrationData.presentations`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import fx
from tqdm.auto import tqdm

__all__ = [
    "DEFAULT_CALIBRATION_SAMPLES",
    "CalibrationData",
    "TopKPercentile",
    "activation_statistics",
    "check_percentile",
    "rate_input",
]

#: What a calibration batch is: images, or frame sequences ``[T, B, ...]`` (event data).
CALIBRATION_INPUTS = ("constant", "sequence")

#: Training images a data-based method (maxnorm, robustnorm, threshold balancing, RMP, OPI,
#: ECC) calibrates on unless told otherwise: a fixed subset, the same in every process.
DEFAULT_CALIBRATION_SAMPLES = 1000

# Above this many retained tail values, fall back to keeping every value (exact either way).
_TAIL_LIMIT = 20_000_000


def rate_input(frames: torch.Tensor) -> torch.Tensor:
    r"""The rate input of a frame sequence ``[T, B, ...]``: :math:`\bar x = \frac{1}{T}\sum_t
    x_t`, shape ``[B, ...]`` (the sum over frames divided by T; module docstring)."""
    return frames.sum(dim=0) / frames.shape[0]


def check_percentile(p: float) -> float:
    """Validate a percentile: a number in (0, 100]."""
    p = float(p)
    if not (0.0 < p <= 100.0) or math.isnan(p):
        raise ValueError(
            f"percentile must lie in (0, 100] (100 = maximum, 99.9 = robust), got {p}"
        )
    return p


@dataclass
class CalibrationData:
    """The images a data-based method measures its statistics on (normally training images).

    ``batches`` yields ``(x, y)`` pairs or bare ``x`` tensors; at most ``samples`` images are
    used (``None``: all). ``progress`` shows a progress bar. ``input``: ``"constant"``
    (images ``[B, ...]``) or ``"sequence"`` (frames ``[T, B, ...]``, time first, as
    :func:`spikebridge.simulate` takes them; ``samples`` then counts sequences).
    """

    batches: Iterable
    samples: int | None = 1000
    progress: bool = False
    input: str = "constant"

    def __post_init__(self) -> None:
        if self.samples is not None and (int(self.samples) != self.samples or self.samples < 1):
            raise ValueError(f"calibration samples must be an integer >= 1, got {self.samples!r}")
        if self.input not in CALIBRATION_INPUTS:
            raise ValueError(f"calibration input must be one of {CALIBRATION_INPUTS}, got "
                             f"{self.input!r}")

    @property
    def sequence(self) -> bool:
        """Whether the batches are frame sequences ``[T, B, ...]``."""
        return self.input == "sequence"

    def images(self, device: torch.device | str = "cpu",
               description: str = "calibrating") -> Iterator[torch.Tensor]:
        """The ANN's calibration inputs ``[B, ...]``, batch by batch, cut at ``samples``: the
        images, or for sequence input each sequence's rate input (:func:`rate_input`)."""
        for x in self.presentations(device, description):
            yield rate_input(x) if self.sequence else x

    def presentations(self, device: torch.device | str = "cpu",
                      description: str = "calibrating") -> Iterator[torch.Tensor]:
        """What the SNN is given, batch by batch, cut at ``samples``: images ``[B, ...]``, or
        frame sequences ``[T, B, ...]`` (``simulate(..., input=self.input)``)."""
        seen = 0
        batch_dim = 1 if self.sequence else 0
        bar = tqdm(total=self.samples, desc=description, unit="img", disable=not self.progress,
                   leave=False)
        try:
            for item in self.batches:
                x = item[0] if isinstance(item, (tuple, list)) else item
                if self.sequence and (not isinstance(x, torch.Tensor) or x.dim() < 3):
                    shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                    raise ValueError(f"sequence calibration data must be frames [T, B, ...] "
                                     f"(time first), got {shape}")
                if self.samples is not None:
                    x = x.narrow(batch_dim, 0, min(x.shape[batch_dim], self.samples - seen))
                if x.shape[batch_dim] == 0:
                    break
                seen += int(x.shape[batch_dim])
                bar.update(int(x.shape[batch_dim]))
                yield x.to(device)
                if self.samples is not None and seen >= self.samples:
                    break
        finally:
            bar.close()
        if seen == 0:
            raise ValueError("the calibration data yielded no images")


class TopKPercentile:
    """Exact streaming nearest-rank percentile of all values fed to :meth:`update`.

    ``total`` is an upper bound on the number of values that will be fed (from the sample count
    and the layer's size); it fixes how many of the largest values are kept, ``k``. ``None``
    keeps every value. The rank is taken on the values actually seen, which is exact because
    fewer values never need a longer tail.
    """

    def __init__(self, percentile: float, total: int | None) -> None:
        self.percentile = check_percentile(percentile)
        self.k = None if total is None else self._tail_length(int(total))
        self.tail: torch.Tensor | None = None
        self.seen = 0

    def _tail_length(self, n: int) -> int:
        # exact rational arithmetic: 99.9 * 41000 / 100 is 40959.00000000001 in floats
        rank = max(1, math.ceil(Fraction(repr(self.percentile)) * n / 100))
        return n - rank + 1

    def update(self, values: torch.Tensor) -> None:
        flat = values.detach().reshape(-1).to(torch.float32)
        self.seen += flat.numel()
        pool = flat if self.tail is None else torch.cat([self.tail, flat])
        if self.k is not None and pool.numel() > self.k and self.k <= _TAIL_LIMIT:
            pool = torch.topk(pool, self.k, sorted=False).values
        self.tail = pool

    def value(self) -> float:
        """The nearest-rank percentile of every value seen."""
        if self.tail is None or self.seen == 0:
            raise ValueError("no values were observed")
        k = self._tail_length(self.seen)
        return float(torch.topk(self.tail, k).values[-1])


class _Recorder(fx.Interpreter):
    """Runs a GraphModule and hands the outputs of chosen nodes to a callback."""

    def __init__(self, gm: fx.GraphModule, watched: set[str], callback) -> None:
        super().__init__(gm)
        self.watched = watched
        self.callback = callback

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n.name in self.watched:
            self.callback(n.name, out)
        return out


def activation_statistics(
    ann: fx.GraphModule,
    nodes: Sequence[str],
    data: CalibrationData,
    percentile: float = 100.0,
    *,
    device: torch.device | str = "cpu",
    zeros: bool = False,
) -> dict[str, float]:
    """:math:`\\lambda` = the ``percentile`` of the outputs of each graph node in ``nodes``.

    ``ann`` is the (BatchNorm-folded) ANN graph; ``nodes`` are the names of its activation
    nodes. The percentile is taken over the **non-zero** output elements of the calibration
    images, as Rueckauer's SNN toolbox does (``snntoolbox/conversion/utils.py``,
    ``normalize_parameters``: ``activations[np.nonzero(activations)]`` before
    ``np.percentile``); ``zeros=True`` counts the zeros too (what earlier spikebridge versions
    did: a lower robust percentile where most activations are zero). The maximum (p = 100) is the
    same either way.
    """
    check_percentile(percentile)
    watched = set(nodes)
    missing = watched - {n.name for n in ann.graph.nodes}
    if missing:
        raise ValueError(f"activation nodes {sorted(missing)} are not in the graph")
    stats: dict[str, TopKPercentile] = {}

    def record(name: str, out: torch.Tensor) -> None:
        if name not in stats:
            # an upper bound on the values fed: fewer (non-zero) values need no longer tail
            total = None if data.samples is None else out[0].numel() * data.samples
            stats[name] = TopKPercentile(percentile, total)
        stats[name].update(out if zeros else out[out != 0])

    ann = ann.to(device).eval()
    with torch.inference_mode():
        for x in data.images(device, description=f"calibration: p{percentile:g} activations"):
            _Recorder(ann, watched, record).run(x)
    result = {}
    for name in nodes:
        if name not in stats:
            raise ValueError(f"activation {name!r} produced no output during calibration")
        result[name] = stats[name].value()
    return result
