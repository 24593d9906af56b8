"""Turn `spikebridge compare` results into the markdown tables of docs/benchmarks.md §7.

    python bench/methods_report.py bench/results/methods_fashion/*/results.json

Prints one table (method, source ANN accuracy, SNN accuracy per T, total steps, spike format)
and checks the claims issue #7 asks about, each stated as held or not with the numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(paths: list[Path]) -> list[dict]:
    records = []
    for path in paths:
        records.extend(json.loads(path.read_text())["results"])
    return records


def table(records: list[dict]) -> str:
    steps = sorted({int(t) for rec in records for t in rec["snn_accuracy"]})
    head = "| method | source ANN | ANN % | " + " | ".join(f"T={t}" for t in steps)
    head += " | spikes |\n|---|---|---|" + "---|" * len(steps) + "---|"
    rows = [head]
    for rec in records:
        acc = rec["snn_accuracy"]
        cells = [f"{acc[str(t)] * 100:.2f}" if str(t) in acc else "–" for t in steps]
        spikes = rec.get("spikes", {})
        kind = ("signed, 2 bits" if spikes.get("signed") else "binary, 1 bit")
        kind += ", " + spikes.get("value", "")
        pre = rec["latency"][next(iter(rec["latency"]))]["presimulation"]
        if pre:
            kind += f"; +{pre} pre-simulation steps"
        ann = "–" if rec["ann_accuracy"] is None else f"{rec['ann_accuracy'] * 100:.2f}"
        rows.append(f"| {rec.get('label', rec['method'])} | {rec['model']} | {ann} | "
                    + " | ".join(cells) + f" | {kind} |")
    return "\n".join(rows)


def first_within(rec: dict, gap_pt: float) -> int | None:
    """Smallest reported T whose accuracy is within ``gap_pt`` points of the record's ANN."""
    for t in sorted(int(k) for k in rec["snn_accuracy"]):
        if (rec["ann_accuracy"] - rec["snn_accuracy"][str(t)]) * 100 <= gap_pt:
            return t
    return None


def claims(records: list[dict]) -> str:
    by = {rec.get("label", rec["method"]): rec for rec in records}
    lines = []

    def within(label: str) -> str:
        if label not in by:
            return f"{label}: not run"
        t = first_within(by[label], 0.5)
        return f"{label} within 0.5 pt of its ANN first at T = {t}" if t else (
            f"{label} never within 0.5 pt of its ANN up to T = "
            f"{max(int(k) for k in by[label]['snn_accuracy'])}")

    for label in ("ecc", "maxnorm", "robustnorm", "rmp(scale=0.8)", "rmp", "opi",
                  "threshold-balancing", "qcfs", "cos", "slip", "strelu", "threshold-relu",
                  "leaky-threshold"):
        if label in by:
            lines.append("- " + within(label))
    if "slip" in by and ("qcfs" in by or "qcfs(L=4, 3 ep)" in by):
        q = by.get("qcfs(L=4, 3 ep)", by.get("qcfs"))
        s1, q1 = by["slip"]["snn_accuracy"].get("1"), q["snn_accuracy"].get("1")
        if s1 is not None and q1 is not None:
            lines.append(f"- SlipReLU at T = 1: {s1 * 100:.2f} % vs QCFS at T = 1: "
                         f"{q1 * 100:.2f} % → {'held' if s1 > q1 else 'not held'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", nargs="+", type=Path)
    args = parser.parse_args()
    records = load(args.results)
    print(table(records))
    print()
    print(claims(records))


if __name__ == "__main__":
    main()
