"""Redraw the plots of every saved comparison (`bench/results/**/results.json`) with the current
plotting code, without re-running anything:

    python bench/replot.py
"""

from __future__ import annotations

import json
from pathlib import Path

from spikebridge.reporting import plot_accuracy, plot_accuracy_vs_energy


def main() -> None:
    for path in sorted(Path("bench/results").rglob("results.json")):
        records = json.loads(path.read_text()).get("results")
        if not records:
            continue
        plot_accuracy(records, path.parent / "accuracy_vs_T.png")
        written = ["accuracy_vs_T.png"]
        if any(rec.get("ops") for rec in records):
            plot_accuracy_vs_energy(records, path.parent / "accuracy_vs_energy.png")
            written.append("accuracy_vs_energy.png")
        print(f"{path.parent}: {', '.join(written)}")


if __name__ == "__main__":
    main()
