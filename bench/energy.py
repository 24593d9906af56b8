"""Operation counting: its overhead on simulation time, and the counts quoted in docs/energy.md.

1. Overhead on the shipped model, Fashion-MNIST test images: (a) measured in one run — the
   wall time spent in the counting hooks and the one-off fan-out construction, against the
   evaluation's simulation time (``OperationReport.overhead``; robust to load from other
   processes); (b) interleaved A/B runs of ``evaluate(..., count_operations=True)`` vs
   ``False`` on the same batches (noisy on a shared machine).
2. Counts: ANN MACs of the shipped model and of the CIFAR VGG-16 / ResNet-18 definitions.

    python bench/energy.py [--T 32] [--limit 1000] [--batch-size 250] [--repeats 3]
    python bench/energy.py --summary bench/results/energy_*/results.json   # docs tables

The per-method counts of docs/energy.md come from ``spikebridge compare`` (its results.json /
results.csv carry ``ops`` per T); bench/run_all.sh has the commands.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import spikebridge as sb
from spikebridge.checkpoint import load_checkpoint
from spikebridge.data import BatchLoader, load_dataset
from spikebridge.energy import ann_operations
from spikebridge.models import create_model
from spikebridge.reporting import _label as short_label
from spikebridge.shipped import SHIPPED_MODEL_DIR


def _timed(snn, batches, steps: int, count: bool, mode: str) -> tuple[float, object]:
    start = time.perf_counter()
    result = sb.evaluate(snn, batches, [steps], mode=mode, count_operations=count)
    return time.perf_counter() - start, result


def summarize(paths: list[Path]) -> str:
    """Markdown tables (per method: accuracy, SOPs, SOPs/MAC, E_SNN/E_ANN per T) and, per
    method, the largest T still below 0.5 SOPs per MAC with its accuracy gap to the ANN."""
    lines = []
    for path in paths:
        records = json.loads(Path(path).read_text())["results"]
        steps = list(records[0]["snn_accuracy"])
        first = records[0]["ops"][steps[0]]
        models = sorted({rec["model"] for rec in records})
        lines += [f"**{', '.join(models)}**: {first['ann_macs'] / 1e6:.3f} M ANN MACs/image, "
                  f"{records[0]['n_samples']} test images ({path})", "",
                  "| method | | " + " | ".join(f"T={t}" for t in steps) + " |",
                  "|---|---|" + "---|" * len(steps)]
        below = []
        for rec in records:
            label, ops, acc = short_label(rec), rec["ops"], rec["snn_accuracy"]
            ann = rec["ann_accuracy"]
            rows = ((f"acc % (ANN {ann * 100:.2f})", [f"{acc[t] * 100:.2f}" for t in steps]),
                    ("SOPs (M)", [f"{ops[t]['snn_sops'] / 1e6:.3g}" for t in steps]),
                    ("SOPs/MAC", [f"{ops[t]['sops_per_mac']:.2f}" for t in steps]),
                    ("E SNN/ANN", [f"{ops[t]['ratio']:.2f}" for t in steps]))
            for k, (name, cells) in enumerate(rows):
                lines.append(f"| {label if k == 0 else ''} | {name} | " + " | ".join(cells) + " |")
            cheap = [t for t in steps if ops[t]["sops_per_mac"] < 0.5]
            if cheap:
                t = cheap[-1]
                gap = (rec["ann_accuracy"] - acc[t]) * 100
                below.append(f"{label}: T ≤ {t} (T = {t}: {ops[t]['sops_per_mac']:.2f} SOPs/MAC, "
                             f"accuracy {acc[t] * 100:.2f} %, gap {gap:.2f} points)")
            else:
                below.append(f"{label}: never (T = {steps[0]}: "
                             f"{ops[steps[0]]['sops_per_mac']:.2f} SOPs/MAC)")
        lines += ["", "Below 0.5 SOPs per MAC: " + "; ".join(below) + ".", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--T", type=int, default=32)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL_DIR)
    parser.add_argument("--out", type=Path, default=Path("bench/results/energy.json"))
    parser.add_argument("--summary", type=Path, nargs="+", default=None,
                        help="only print markdown tables of these `compare` results.json files")
    args = parser.parse_args()
    if args.summary:
        print(summarize(args.summary))
        return
    ann, config = load_checkpoint(args.model)
    test = load_dataset(config["dataset"], "test").subset(args.limit, seed=0)
    batches = list(BatchLoader(test, args.batch_size))
    results: dict = {"T": args.T, "n_samples": len(test), "batch_size": args.batch_size,
                     "repeats": args.repeats, "threads": torch.get_num_threads(),
                     "torch": torch.__version__,
                     "machine": platform.processor() or platform.machine(),
                     "overhead": {}}
    for method, mode in (("qcfs", "step"), ("qcfs", "layer"), ("cos", "hybrid")):
        snn = sb.convert(ann, method)
        _timed(snn, batches[:1], args.T, False, mode)  # warm-up
        counted, plain, pairs, one_run = 0.0, 0.0, [], []
        for _ in range(args.repeats):
            on, result = _timed(snn, batches, args.T, True, mode)
            off, _ = _timed(snn, batches, args.T, False, mode)
            counted += on
            plain += off
            pairs.append(on / off)
            one_run.append(result.operations.overhead(result.snn_seconds))
        results["overhead"][f"{method}_{mode}"] = {
            "one_run_ratios": one_run,
            "hook_seconds": result.operations.seconds,
            "snn_seconds": result.snn_seconds,
            "ab_counted_seconds": counted, "ab_uncounted_seconds": plain,
            "ab_ratio": counted / plain, "ab_pair_ratios": pairs,
            "sops_at_T": result.operations.per_T[args.T]["snn_sops"],
        }
        print(f"{method} ({mode}): overhead measured in one run ×"
              f"{', ×'.join(f'{r:.3f}' for r in one_run)}; interleaved A/B ×{counted / plain:.3f} "
              f"(pairs {', '.join(f'{r:.3f}' for r in pairs)})")
    shape = (config["in_channels"], *config["input_size"])
    macs = {"shipped": ann_operations(ann, shape).to_dict()}
    for name in ("vgg16", "resnet18"):
        macs[name] = ann_operations(create_model(name, 10, 3), (3, 32, 32)).to_dict()
        del macs[name]["layers"]
    results["ann_macs"] = macs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
