"""Simulation cost: wall time of T steps of the SNN vs T × the BN-folded ANN forward.

Both run on the same batches of the Fashion-MNIST test set with the shipped model, single
process, inference mode. The ANN baseline is the BN-folded graph with its QCFS activations
(what a per-step ANN evaluation would cost); the SNN numbers include everything simulate() does
(prefix, neuron scans, output stacking).

    python bench/simulation_cost.py [--T 32] [--limit 10000] [--batch-size 250] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from common import model_and_batches, wall_seconds

import spikebridge as sb
from spikebridge.convert import fold_graph_batchnorms, trace
from spikebridge.shipped import SHIPPED_MODEL_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--T", type=int, default=32)
    parser.add_argument("--limit", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL_DIR)
    parser.add_argument("--out", type=Path, default=Path("bench/results/simulation_cost.json"))
    args = parser.parse_args()
    ann, batches = model_and_batches(args.model, args.limit, args.batch_size)
    folded = trace(ann)
    fold_graph_batchnorms(folded)
    folded.eval()

    def ann_T(x):
        with torch.inference_mode():
            for _ in range(args.T):
                folded(x)

    snn = sb.convert(ann, "qcfs")
    cos = sb.convert(ann, "cos", rho=4)
    results = {"T": args.T, "n_samples": sum(len(x) for x in batches),
               "batch_size": args.batch_size,
               "threads": torch.get_num_threads(), "torch": torch.__version__,
               "machine": platform.processor() or platform.machine()}
    results["ann_x_T_seconds"] = wall_seconds(ann_T, batches)
    for mode in ("step", "layer"):
        results[f"snn_{mode}_seconds"] = wall_seconds(
            lambda x, m=mode: sb.simulate(snn, x, args.T, mode=m), batches
        )
    results["cos_rho4_seconds"] = wall_seconds(lambda x: sb.simulate(cos, x, args.T), batches)
    base = results["ann_x_T_seconds"]
    for key in ("snn_step_seconds", "snn_layer_seconds", "cos_rho4_seconds"):
        results[key.replace("_seconds", "_ratio")] = results[key] / base
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
