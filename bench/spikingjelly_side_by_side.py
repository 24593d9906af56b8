"""spikebridge vs SpikingJelly on the identical network, timed side by side in one process.

SpikingJelly is a benchmark-only dependency (``bench/requirements-spikingjelly.txt``), never a
product one. Install it into the benchmark environment *without* letting pip touch torch:

    .venv/bin/pip install --no-deps -r bench/requirements-spikingjelly.txt

The SpikingJelly network is built from the same BN-folded graph spikebridge converts: every QCFS
activation becomes ``IFNode(v_threshold=θ, v_reset=None)`` (soft reset, θ per layer) started
at ``v = θ/2`` and followed by a multiplication by θ (spikebridge's weighted spikes ``θ·s``).
Both run in channels_last, as spikebridge's simulator does on CPU. The script asserts that the
two give identical accuracy at every t ≤ T and bit-identical outputs, then times, interleaved
over several rounds: spikebridge (the mode ``simulate`` picks, ``--our-mode`` to force one),
SpikingJelly single-step (``step_mode='s'``, the whole network once per step) and SpikingJelly
multi-step (``step_mode='m'``, time folded into the batch for the stateless layers, as
``SeqToANNContainer`` does). The process retains freed memory (``--no-retain-memory``: glibc's
defaults), for all three alike.

    python bench/spikingjelly_side_by_side.py [--limit 1000] [--T 4,8,32] [--rounds 4]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from common import allocator_setting  # bench/ is the script's directory
from torch import nn

import spikebridge as sb
from spikebridge.activations import QCFS
from spikebridge.checkpoint import load_checkpoint
from spikebridge.convert import fold_graph_batchnorms, trace
from spikebridge.data import BatchLoader, load_dataset
from spikebridge.shipped import SHIPPED_MODEL_DIR
from spikebridge.simulate import correct_over_time, resolve_mode

try:
    from spikingjelly.activation_based import neuron
except ImportError as exc:  # pragma: no cover - optional benchmark dependency
    raise SystemExit(
        "SpikingJelly is not installed: .venv/bin/pip install --no-deps -r "
        f"bench/requirements-spikingjelly.txt ({exc})"
    ) from exc


class WeightedIFNode(nn.Module):
    """SpikingJelly's IFNode (soft reset, threshold θ, v(0) = θ/2) emitting θ·spike.

    In multi-step mode it receives time folded into the batch, ``[T·B, ...]``, and unfolds it
    to SpikingJelly's ``[T, B, ...]``.
    """

    def __init__(self, threshold: float, step_mode: str, steps: int = 1) -> None:
        super().__init__()
        self.threshold = threshold
        self.steps = steps
        self.node = neuron.IFNode(v_threshold=threshold, v_reset=None, step_mode=step_mode)

    def reset(self) -> None:
        self.node.reset()
        self.node.v = 0.5 * self.threshold  # materialized as full_like(x, θ/2) on first use

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.node.step_mode == "m":
            seq = x.view(self.steps, x.shape[0] // self.steps, *x.shape[1:])
            return self.node(seq).view(x.shape) * self.threshold
        return self.node(x) * self.threshold


def spikingjelly_network(ann: nn.Module, step_mode: str) -> nn.Module:
    folded = trace(ann)
    fold_graph_batchnorms(folded)  # the same folding (and ε) convert() applies for "qcfs"
    for name, module in list(folded.named_modules()):
        if isinstance(module, QCFS):
            parent, _, child = name.rpartition(".")
            setattr(folded.get_submodule(parent) if parent else folded, child,
                    WeightedIFNode(float(module.theta.detach()), step_mode))
    # channels_last weights and input, as spikebridge's CPU simulator uses (same conv kernels)
    return folded.eval().to(memory_format=torch.channels_last)


def nodes(net: nn.Module) -> list[WeightedIFNode]:
    return [m for m in net.modules() if isinstance(m, WeightedIFNode)]


def run_single_step(net: nn.Module, x: torch.Tensor, steps: int) -> torch.Tensor:
    for m in nodes(net):
        m.reset()
    with torch.inference_mode():
        return torch.stack([net(x) for _ in range(steps)])


def run_multi_step(net: nn.Module, x: torch.Tensor, steps: int) -> torch.Tensor:
    for m in nodes(net):
        m.reset()
        m.steps = steps
    with torch.inference_mode():
        seq = x.unsqueeze(0).expand(steps, *x.shape).reshape(steps * x.shape[0], *x.shape[1:])
        y = net(seq.contiguous(memory_format=torch.channels_last))
    return y.view(steps, x.shape[0], *y.shape[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--T", default="4,8,32")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--our-mode", default="auto", choices=("auto", "step", "layer"),
                        help="spikebridge's execution mode (default: what simulate picks)")
    parser.add_argument("--out", type=Path,
                        default=Path("bench/results/spikingjelly_side_by_side.json"))
    parser.add_argument("--no-retain-memory", dest="retain_memory", action="store_false",
                        help="glibc's default allocator setting for the whole process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    allocator = allocator_setting(args.retain_memory)
    ann, config = load_checkpoint(SHIPPED_MODEL_DIR)
    ann.eval()
    data = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in BatchLoader(
        load_dataset(config["dataset"], "test").subset(args.limit, seed=0), args.batch_size)]
    snn = sb.convert(ann, "qcfs")
    single = spikingjelly_network(ann, "s")
    multi = spikingjelly_network(ann, "m")
    steps = [int(t) for t in args.T.split(",")]
    horizon = max(steps)

    # 1. identical network: same outputs bit for bit, same accuracy at every t <= T
    correct = {k: torch.zeros(horizon, dtype=torch.long) for k in ("ours", "sj_s", "sj_m")}
    identical = True
    for x, y in data:
        ours = sb.simulate(snn, x, horizon, mode=args.our_mode)
        identical &= torch.equal(ours, sb.simulate(snn, x, horizon, mode="step"))
        theirs_s = run_single_step(single, x, horizon)
        theirs_m = run_multi_step(multi, x, horizon)
        identical &= torch.equal(ours, theirs_s) and torch.equal(ours, theirs_m)
        for key, out in (("ours", ours), ("sj_s", theirs_s), ("sj_m", theirs_m)):
            correct[key] += correct_over_time(out, y)
    n = sum(len(y) for _, y in data)
    accuracy = {k: [float(c) / n for c in v] for k, v in correct.items()}
    assert accuracy["ours"] == accuracy["sj_s"] == accuracy["sj_m"], accuracy
    print(f"identical accuracy at every t <= {horizon} on {n} images "
          f"(T={horizon}: {100 * accuracy['ours'][-1]:.2f} %); bit-identical outputs: {identical}",
          flush=True)

    # 2. timing, interleaved
    runs = {}
    for t in steps:
        runs[f"ours_T{t}"] = lambda t=t: [sb.simulate(snn, x, t, mode=args.our_mode)
                                          for x, _ in data]
        runs[f"sj_single_T{t}"] = lambda t=t: [run_single_step(single, x, t) for x, _ in data]
        runs[f"sj_multi_T{t}"] = lambda t=t: [run_multi_step(multi, x, t) for x, _ in data]
    for fn in runs.values():
        fn()
    rounds = []
    for r in range(args.rounds):
        row = {}
        for key, fn in runs.items():
            start, cpu = time.perf_counter(), time.process_time()
            fn()
            row[key] = time.perf_counter() - start
            row[f"{key}_cpu"] = time.process_time() - cpu
        rounds.append(row)
        print(f"round {r + 1}/{args.rounds} (load {os.getloadavg()[0]:.2f}): "
              + ", ".join(f"{k}={v:.3f}" for k, v in row.items()), flush=True)
    ratios, cpu_ratios = {}, {}
    for t in steps:
        for mode in ("single", "multi"):
            for suffix, out in (("", ratios), ("_cpu", cpu_ratios)):
                values = [row[f"sj_{mode}_T{t}{suffix}"] / row[f"ours_T{t}{suffix}"]
                          for row in rounds]
                out[f"sj_{mode}/ours_T{t}"] = {"min": min(values),
                                               "median": statistics.median(values),
                                               "max": max(values)}
    result = {"spikingjelly": importlib.metadata.version("spikingjelly"),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "images": n,
              "batch_size": args.batch_size, "T": steps, "bit_identical_outputs": identical,
              "accuracy_per_t": accuracy["ours"], "rounds": rounds, "ratios": ratios,
              "cpu_time_ratios": cpu_ratios,
              "load_avg_after": os.getloadavg(), "allocator": allocator,
              "our_mode": resolve_mode(snn, args.our_mode, torch.device("cpu"))}
    try:
        from spikebridge.if_kernel import kernel_status

        result["if_update"] = kernel_status()
    except ImportError:
        result["if_update"] = "eager IF update"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"wall": ratios, "cpu": cpu_ratios}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
