"""Calibration cost: wall time of COS vs plain QCFS at the same T, next to (ρ + T)/T.

The paper reports 134 s (COS) vs 101 s (QCFS) at T = 16 on CIFAR-100 VGG-16 (1.33×). Our COS
replays the buffered input frames of each layer, so its pre-simulation costs neuron updates
only (no extra convolutions): the target is no overhead beyond the ρ extra neuron steps.

    python bench/cos_cost.py [--limit 2000] [--T 4,16] [--rho 4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from common import model_and_batches, wall_seconds

import spikebridge as sb
from spikebridge.shipped import SHIPPED_MODEL_DIR


def seconds(snn, batches, steps, mode) -> float:
    return wall_seconds(lambda x: sb.simulate(snn, x, steps, mode=mode), batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--T", default="4,16")
    parser.add_argument("--rho", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL_DIR)
    parser.add_argument("--out", type=Path, default=Path("bench/results/cos_cost.json"))
    args = parser.parse_args()
    ann, batches = model_and_batches(args.model, args.limit, args.batch_size)
    qcfs = sb.convert(ann, "qcfs")
    cos = sb.convert(ann, "cos", rho=args.rho)
    light = sb.convert(ann, "cos", rho=args.rho, variant="lightweight")
    rows = []
    for steps in (int(t) for t in args.T.split(",")):
        row = {"T": steps, "rho": args.rho, "n_samples": sum(len(x) for x in batches),
               "qcfs_step_s": seconds(qcfs, batches, steps, "step"),
               "qcfs_layer_s": seconds(qcfs, batches, steps, "layer"),
               "cos_s": seconds(cos, batches, steps, "layer"),
               "cos_hybrid_s": seconds(cos, batches, steps, "hybrid"),
               "lightweight_s": seconds(light, batches, steps, "layer")}
        best = min(row["qcfs_step_s"], row["qcfs_layer_s"])
        row["cos_over_qcfs_same_mode"] = row["cos_s"] / row["qcfs_layer_s"]
        row["cos_over_qcfs_best"] = min(row["cos_s"], row["cos_hybrid_s"]) / best
        row["lightweight_over_qcfs_same_mode"] = row["lightweight_s"] / row["qcfs_layer_s"]
        row["unavoidable_(rho+T)/T"] = (args.rho + steps) / steps
        rows.append(row)
        print(json.dumps(row, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2)
                        + "\n")


if __name__ == "__main__":
    main()
