"""Calibration statistics: exact streaming nearest-rank percentiles, the sample cut, errors."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from spikebridge.calibration import (
    CalibrationData,
    TopKPercentile,
    activation_statistics,
    check_percentile,
)
from spikebridge.convert import fold_graph_batchnorms, trace


def nearest_rank(values: np.ndarray, p: float) -> float:
    """Reference: x_(⌈pn/100⌉) of the ascending sort, the rank computed in exact arithmetic."""
    ordered = np.sort(values.reshape(-1))
    n = ordered.size
    rank = max(1, math.ceil(Fraction(str(p)) * n / 100))
    return float(ordered[rank - 1])


def stream(tracker: TopKPercentile, values: torch.Tensor, seed: int) -> None:
    """Feed ``values`` in uneven chunks (1 value, empty-ish small ones, big ones)."""
    rng = np.random.default_rng(seed)
    flat = values.reshape(-1)
    start = 0
    while start < flat.numel():
        size = int(rng.choice([1, 3, 17, 250, 1999]))
        tracker.update(flat[start:start + size].reshape(-1, 1))
        start += size


@pytest.mark.parametrize("p", [100.0, 99.9, 50.0, 0.01])
@pytest.mark.parametrize("n", [1, 7, 10_007, 23_456])
def test_streaming_percentile_equals_numpy_nearest_rank(p, n):
    g = torch.Generator().manual_seed(n)
    # ReLU-like data: many exact zeros (ties) plus a continuous positive part
    values = torch.relu(torch.randn(n, generator=g))
    expected = nearest_rank(values.numpy(), p)
    for total in (n, 3 * n + 5, None):  # exact count, an upper bound, or "keep everything"
        tracker = TopKPercentile(p, total)
        stream(tracker, values, seed=n)
        assert tracker.seen == n
        assert tracker.value() == expected, (p, n, total)


def test_percentile_keeps_only_the_tail():
    maximum = TopKPercentile(100.0, 10**9)
    maximum.update(torch.rand(5000))
    assert maximum.k == 1 and maximum.tail.numel() == 1
    tracker = TopKPercentile(99.0, 10_000)
    stream(tracker, torch.rand(10_000, generator=torch.Generator().manual_seed(0)), seed=0)
    # k = n - ⌈0.99 n⌉ + 1 = 101 values retained after each update (plus one incoming chunk)
    assert tracker.k == 101
    assert tracker.tail.numel() == 101


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no values"):
        TopKPercentile(50.0, 10).value()


def test_percentile_rank_is_exact_for_round_counts():
    n = 41_000
    values = torch.randperm(n, generator=torch.Generator().manual_seed(0)).float()
    tracker = TopKPercentile(99.9, n)
    stream(tracker, values, seed=2)
    assert tracker.value() == nearest_rank(values.numpy(), 99.9) == 40958.0


@pytest.mark.parametrize("bad", [0, -1, 100.5, float("nan"), float("inf")])
def test_check_percentile_rejects(bad):
    with pytest.raises(ValueError, match="percentile must lie in \\(0, 100\\]"):
        check_percentile(bad)
    with pytest.raises(ValueError, match="percentile"):
        TopKPercentile(bad, 10)


@pytest.mark.parametrize("good", [100, 99.9, 1e-6, "50"])
def test_check_percentile_accepts(good):
    assert check_percentile(good) == float(good)


class CountingBatches:
    """An iterable of ``(x, y)`` batches that counts how many it handed out."""

    def __init__(self, sizes: list[int], bare: bool = False) -> None:
        self.sizes = sizes
        self.bare = bare
        self.pulled = 0

    def __iter__(self):
        offset = 0
        for size in self.sizes:
            self.pulled += 1
            x = torch.arange(offset, offset + size, dtype=torch.float32).view(size, 1)
            offset += size
            yield x if self.bare else (x, torch.zeros(size, dtype=torch.long))


@pytest.mark.parametrize("bare", [False, True])
def test_calibration_data_stops_at_samples_exactly(bare):
    batches = CountingBatches([4, 4, 4, 4, 4], bare=bare)
    data = CalibrationData(batches, samples=10)
    chunks = list(data.images())
    assert [c.shape[0] for c in chunks] == [4, 4, 2]
    assert torch.equal(torch.cat(chunks).view(-1), torch.arange(10, dtype=torch.float32))
    assert batches.pulled == 3  # it does not read ahead past the cut


def test_calibration_data_all_and_fewer_than_samples():
    data = CalibrationData(CountingBatches([3, 5]), samples=None)
    assert sum(c.shape[0] for c in data.images()) == 8
    data = CalibrationData(CountingBatches([3, 5]), samples=1000)  # fewer images than asked
    assert sum(c.shape[0] for c in data.images()) == 8


@pytest.mark.parametrize("batches", [[], [torch.zeros(0, 1)]])
def test_calibration_data_without_images_raises(batches):
    with pytest.raises(ValueError, match="no images"):
        list(CalibrationData(batches, samples=5).images())


@pytest.mark.parametrize("samples", [0, -3, 2.5])
def test_calibration_samples_must_be_a_positive_integer(samples):
    with pytest.raises(ValueError, match="calibration samples"):
        CalibrationData([torch.zeros(1, 1)], samples=samples)


def test_activation_statistics_match_hooks_on_exactly_the_given_samples():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 20), torch.nn.ReLU(), torch.nn.Linear(20, 3),
                                torch.nn.ReLU()).eval()
    gm = trace(model)
    fold_graph_batchnorms(gm)
    nodes = [n.name for n in gm.graph.nodes if n.op == "call_module"
             and isinstance(gm.get_submodule(n.target), torch.nn.ReLU)]
    x = torch.randn(30, 6)
    x[25:] *= 10  # images past the cut have much larger activations
    data = CalibrationData([(x[i:i + 7], None) for i in range(0, 30, 7)], samples=25)
    for p in (100.0, 99.9, 50.0):
        stats = activation_statistics(gm, nodes, data, p)
        with_zeros = activation_statistics(gm, nodes, data, p, zeros=True)
        with torch.no_grad():
            hidden = model[1](model[0](x[:25]))
            out = model[3](model[2](hidden))
        # the toolbox's definition: the percentile of the non-zero activations
        assert stats[nodes[0]] == nearest_rank(hidden[hidden != 0].numpy(), p)
        assert stats[nodes[1]] == nearest_rank(out[out != 0].numpy(), p)
        assert with_zeros[nodes[0]] == nearest_rank(hidden.numpy(), p)
        assert with_zeros[nodes[1]] == nearest_rank(out.numpy(), p)
        if p < 100 and (hidden == 0).any():
            assert with_zeros[nodes[0]] <= stats[nodes[0]]
    stats = activation_statistics(gm, nodes, data, 100.0)
    with torch.no_grad():
        assert stats[nodes[0]] < float(model[1](model[0](x)).max())  # the cut matters
    with pytest.raises(ValueError, match="not in the graph"):
        activation_statistics(gm, ["nope"], data)
