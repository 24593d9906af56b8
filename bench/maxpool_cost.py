"""Simulation cost of the spiking max-pool: bench/your_model.py's network converted by both
max-pool routes (``to_qcfs(..., maxpool="keep")``: spiking max-pools; ``"avg"``: average pools),
QCFS and COS (ρ = 4), timed interleaved in one process, min / median / max over rounds.

    python bench/maxpool_cost.py [--rounds 5] [--images 64] [--T 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from your_model import UserNet  # bench/ is on sys.path when a bench script runs

import spikebridge as sb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--T", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("bench/results/maxpool_cost.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    net = UserNet().eval()  # random weights: dense step cost does not depend on their values
    x = torch.rand(args.images, 1, 28, 28)
    snns = {}
    for route in ("keep", "avg"):
        qcfs = sb.to_qcfs(net, 4, data=[(x, None)], maxpool=route).eval()
        for method in ("qcfs", "cos"):
            snns[f"{route} {method}"] = sb.convert(qcfs, method, input_shape=(1, 28, 28))
    seconds: dict[str, list[float]] = {name: [] for name in snns}
    for snn in snns.values():  # warm-up
        sb.simulate(snn, x, args.T)
    for _ in range(args.rounds):
        for name, snn in snns.items():
            start = time.perf_counter()
            sb.simulate(snn, x, args.T)
            seconds[name].append(time.perf_counter() - start)
    result = {name: {"min": min(v), "median": statistics.median(v), "max": max(v)}
              for name, v in seconds.items()}
    for method in ("qcfs", "cos"):
        result[f"keep/avg {method} (median)"] = (result[f"keep {method}"]["median"]
                                                 / result[f"avg {method}"]["median"])
    result["command"] = (f"python bench/maxpool_cost.py --rounds {args.rounds} --images "
                         f"{args.images} --T {args.T}")
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
