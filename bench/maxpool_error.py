"""Error of the spiking max-pool (spikebridge.spiking_maxpool) against the ANN's max-pool, per
T, on Fashion-MNIST.

The shipped QCFS model has no max-pooling, so a small QCFS CNN with two ``nn.MaxPool2d`` (each
after an activation, i.e. spiking in the SNN) is trained briefly here, converted with ``qcfs``
(and ``cos``, ρ = 4, for accuracy), and simulated once for T = 32 (every t <= 32 from that run).
At each pool site, over the test images, relative to the ANN's pooled activation ``a``
(``mean|·| / mean|a|``):

* ``spiking``: the spiking max-pool's output rate ``φ_out(T)`` against ``a`` — the error asked for;
* ``inherited``: the max-pool of the pool's *input* rates against ``a`` — the error of the IF
  layer feeding it, which any max-pool of rates inherits;
* ``gate``: ``φ_out(T)`` against the max-pool of the input rates — the gate's own error (0 for
  one-amplitude spikes, module docstring: the output count is the largest input count);
* ``or``: an ungated max-pool of each step's spikes (their OR) on the same input spikes.

An IF layer's rate tends to ``clip(z, 0, θ)``, not to QCFS's L-level staircase, so against the
QCFS ANN the errors stop falling beyond T = L. The columns ``spiking ∞`` and ``or ∞`` compare
with the same network with clipped ReLUs of the same θ (the T → ∞ limit) instead.

    python bench/maxpool_error.py            # ~1–3 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from your_model import fit  # bench/ is on sys.path when a bench script runs

import spikebridge as sb
from spikebridge.activations import QCFS, ClippedReLU
from spikebridge.data import BatchLoader, load_dataset
from spikebridge.spiking_maxpool import SpikingMaxPool2d

STEPS = (1, 2, 4, 8, 16, 32)


class PoolNet(nn.Module):
    """conv-BN-QCFS-maxpool ×2, conv-BN-QCFS, global average pooling, linear."""

    def __init__(self, levels: int = 4) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), (
            QCFS(levels, 1.0))
        self.pool1 = nn.MaxPool2d(2)
        self.conv2, self.bn2, self.act2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), (
            QCFS(levels, 1.0))
        self.pool2 = nn.MaxPool2d(2)
        self.conv3, self.bn3, self.act3 = nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), (
            QCFS(levels, 1.0))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))
        x = self.pool2(self.act2(self.bn2(self.conv2(x))))
        return self.fc(self.act3(self.bn3(self.conv3(x))).mean((2, 3)))


class _Sums:
    """Per pool site: input and output sums over the steps so far, and the OR pool's."""

    def __init__(self, pool: SpikingMaxPool2d) -> None:
        self.pool, self.steps = pool, 0
        self.inputs = self.outputs = self.ors = None
        self.snapshots: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def __call__(self, _module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        x = args[0].double()
        ored = F.max_pool2d(x, self.pool.kernel_size, self.pool.stride, self.pool.padding,
                            self.pool.dilation, self.pool.ceil_mode)
        if self.steps == 0:
            self.inputs, self.outputs, self.ors = x.clone(), out.double(), ored
        else:
            self.inputs += x
            self.outputs += out.double()
            self.ors += ored
        self.steps += 1
        if self.steps in STEPS:
            pooled_inputs = F.max_pool2d(self.inputs, self.pool.kernel_size, self.pool.stride,
                                         self.pool.padding, self.pool.dilation,
                                         self.pool.ceil_mode)
            self.snapshots[self.steps] = (self.outputs / self.steps, pooled_inputs / self.steps,
                                          self.ors / self.steps)


def clipped(ann: nn.Module) -> nn.Module:
    """``ann`` with every QCFS replaced by a clipped ReLU of the same θ: the T → ∞ limit."""
    limit = copy.deepcopy(ann)
    for name, module in list(limit.named_modules()):
        if isinstance(module, QCFS):
            setattr(limit, name, ClippedReLU(float(module.theta.detach())))
    return limit.eval()


def _pool_outputs(model: nn.Module, names, x: torch.Tensor) -> tuple[dict, torch.Tensor]:
    captured: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda _m, _a, out, name=name: captured.__setitem__(name, out.double()))
        for name in names]
    with torch.inference_mode():
        output = model(x).double()
    for hook in hooks:
        hook.remove()
    return captured, output


COLUMNS = ("spiking", "inherited", "gate", "or", "spiking ∞", "or ∞")


def measure(ann: nn.Module, snn: sb.SpikingNetwork, batches: list) -> dict:
    sites = {name: m for name, m in snn.network.named_modules()
             if isinstance(m, SpikingMaxPool2d)}
    limit = clipped(ann)
    totals = {name: {t: dict.fromkeys(COLUMNS, 0.0) for t in STEPS} for name in sites}
    scale = dict.fromkeys(sites, 0.0)
    limit_scale = dict.fromkeys(sites, 0.0)
    output_error = {t: 0.0 for t in STEPS}
    output_scale = 0.0
    correct = {t: 0 for t in STEPS}
    agree = {t: 0 for t in STEPS}
    ann_correct = n = 0
    for x, y in batches:
        captured, reference = _pool_outputs(ann, sites, x)
        limits, _ = _pool_outputs(limit, sites, x)
        sums = {name: _Sums(pool) for name, pool in sites.items()}
        hooks = [pool.register_forward_hook(sums[name]) for name, pool in sites.items()]
        outputs = sb.simulate(snn, x, max(STEPS), mode="step").double()
        for hook in hooks:
            hook.remove()
        running = outputs.cumsum(0) / torch.arange(1, max(STEPS) + 1).view(-1, 1, 1)
        for name in sites:
            a, a_limit = captured[name], limits[name]
            scale[name] += float(a.abs().sum())
            limit_scale[name] += float(a_limit.abs().sum())
            for t in STEPS:
                rate, inherited, ored = sums[name].snapshots[t]
                row = totals[name][t]
                row["spiking"] += float((rate - a).abs().sum())
                row["inherited"] += float((inherited - a).abs().sum())
                row["gate"] += float((rate - inherited).abs().sum())
                row["or"] += float((ored - a).abs().sum())
                row["spiking ∞"] += float((rate - a_limit).abs().sum())
                row["or ∞"] += float((ored - a_limit).abs().sum())
        output_scale += float(reference.abs().sum())
        for t in STEPS:
            output_error[t] += float((running[t - 1] - reference).abs().sum())
            correct[t] += int((running[t - 1].argmax(-1) == y).sum())
            agree[t] += int((running[t - 1].argmax(-1) == reference.argmax(-1)).sum())
        ann_correct += int((reference.argmax(-1) == y).sum())
        n += len(y)
    return {
        "pools": {name: {str(t): {k: v / (limit_scale if "∞" in k else scale)[name]
                                  for k, v in totals[name][t].items()}
                         for t in STEPS} for name in sites},
        "output_relative_error": {str(t): output_error[t] / output_scale for t in STEPS},
        "snn_accuracy": {str(t): correct[t] / n for t in STEPS},
        "agreement_with_ann": {str(t): agree[t] / n for t in STEPS},
        "ann_accuracy": ann_correct / n,
        "samples": n,
    }


def table(results: dict) -> str:
    pools = list(results["pools"])

    def rows(head: list[str], cells) -> list[str]:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join([str(t), *cells(str(t))]) + " |" for t in STEPS]
        return lines

    first = rows(["T"] + [f"{p} {k}" for p in pools for k in COLUMNS[:4]],
                 lambda t: [f"{results['pools'][p][t][k]:.3f}" for p in pools
                            for k in COLUMNS[:4]])
    second = rows(
        ["T"] + [f"{p} {k}" for p in pools for k in COLUMNS[4:]]
        + ["output rel. error", "agreement with ANN", "SNN acc. qcfs", "SNN acc. cos ρ=4"],
        lambda t: [f"{results['pools'][p][t][k]:.3f}" for p in pools for k in COLUMNS[4:]]
        + [f"{results['output_relative_error'][t]:.3f}",
           f"{100 * results['agreement_with_ann'][t]:.1f} %",
           f"{100 * results['snn_accuracy'][t]:.1f} %",
           f"{100 * results['cos_accuracy'][t]:.1f} %"])
    return "\n".join(first + [""] + second)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-limit", type=int, default=12000)
    parser.add_argument("--limit", type=int, default=1000, help="test images")
    parser.add_argument("--out", type=Path, default=Path("bench/results/maxpool_error.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    start = time.perf_counter()
    train_set = load_dataset("fashion-mnist", "train").subset(args.train_limit, seed=0)
    test = list(BatchLoader(load_dataset("fashion-mnist", "test").subset(args.limit, seed=0),
                            250))
    ann = PoolNet()
    fit(ann, BatchLoader(train_set, 128, shuffle=True, seed=0), args.epochs, 0.1)
    trained = time.perf_counter() - start
    snn = sb.convert(ann, "qcfs", input_shape=(1, 28, 28))
    results = measure(ann, snn, test)
    cos = sb.evaluate(sb.convert(ann, "cos", rho=4, input_shape=(1, 28, 28)), test,
                      list(STEPS), count_operations=False)
    results["cos_accuracy"] = {str(t): cos.snn_accuracy[t] for t in STEPS}
    results["train_seconds"] = round(trained, 1)
    results["seconds"] = round(time.perf_counter() - start, 1)
    results["command"] = (f"python bench/maxpool_error.py --epochs {args.epochs} --train-limit "
                          f"{args.train_limit} --limit {args.limit}")
    results["definitions"] = {
        "spiking": "mean |rate of the spiking max-pool's output - ANN max-pool output| / "
                   "mean |ANN max-pool output|",
        "inherited": "the same for max-pool(input rates): the feeding IF layer's error",
        "gate": "mean |spiking rate - max-pool(input rates)| / mean |ANN max-pool output|",
        "or": "the same as 'spiking' for an ungated max-pool of each step's spikes",
        "spiking ∞ / or ∞": "'spiking' / 'or' against the clipped-ReLU network (same θ), the "
                            "T → ∞ limit of the IF rates",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"ANN accuracy {100 * results['ann_accuracy']:.2f} % on {results['samples']} test "
          f"images; {results['seconds']} s")
    print(table(results))


if __name__ == "__main__":
    main()
