"""Markdown tables from bench/simulation_cost.py results (the tables in docs/benchmarks.md §4).

    python bench/cost_table.py --labels before,after [--dir bench/results/simulation_cost]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BASELINES = (("relu_eager", "ReLU eager CL"), ("relu_compiled", "ReLU compiled"),
             ("fastest_relu", "fastest ReLU"), ("qcfs_eager", "old: QCFS eager"))


def cell(r: dict) -> str:
    return f"{r['median']:.2f} ({r['min']:.2f}–{r['max']:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labels", default="before,after")
    parser.add_argument("--dir", type=Path, default=Path("bench/results/simulation_cost"))
    parser.add_argument("--models", default="fashion_cnn,resnet20,vgg16")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="ratios of process CPU time (default, steadier) or of wall time")
    args = parser.parse_args()
    print("| model | code | run | " + " | ".join(b[1] for b in BASELINES)
          + " | load (1-min) |")
    print("|---|---|---|" + "---|" * len(BASELINES) + "---|")
    for model in args.models.split(","):
        for label in args.labels.split(","):
            path = args.dir / f"{label}_{model}.json"
            if not path.exists():
                continue
            d = json.loads(path.read_text())
            load = f"{d['load_avg_before'][0]:.1f}–{d['load_avg_after'][0]:.1f}"
            for kind in ("snn", "cos"):
                for t in d["T"]:
                    key = f"{kind}_T{t}"
                    name = f"SNN T={t}" if kind == "snn" else f"COS ρ={d['rho']} T={t}"
                    table = d["cpu_time_ratios" if args.clock == "cpu" else "ratios"]
                    row = [cell(table[f"{key}/{b}"]) for b, _ in BASELINES]
                    print(f"| {model} | {label} | {name} | " + " | ".join(row) + f" | {load} |")


if __name__ == "__main__":
    main()
