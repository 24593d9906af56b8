"""Draw docs/architecture.png: the package's layers (tests/test_layering.py's LAYERS) with their
modules, measured from the source: the import arrows between layers, and any upward arrow in red.

    .venv/bin/python scripts/draw_architecture.py [--out docs/architecture.png]
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import test_layering as layering  # noqa: E402


def _group(module: str) -> str:
    """A sub-package as one name (``data/``) where it sits in its package's layer, its module
    by path (``data/errors``) where not; other modules by their own name."""
    short = module[len("spikebridge."):] if module != "spikebridge" else "__init__ (face)"
    head = short.split(".")[0]
    if not (layering.SOURCE / "spikebridge" / head).is_dir():
        return short
    same = layering.layer_of(module) == layering.layer_of(f"spikebridge.{head}")
    return f"{head}/" if same else short.replace(".", "/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "architecture.png")
    args = parser.parse_args()
    graph = layering.import_graph()
    members: dict[int, list[str]] = {i: [] for i in range(len(layering.LAYERS))}
    for module in sorted(graph):
        group = _group(module)
        layer = layering.layer_of(module)
        if group not in members[layer]:
            members[layer].append(group)
    arrows = Counter()
    for a, targets in graph.items():
        for b in targets:
            la, lb = layering.layer_of(a), layering.layer_of(b)
            if la != lb:
                arrows[(la, lb)] += 1
    n = len(layering.LAYERS)
    fig, ax = plt.subplots(figsize=(10, 0.95 * n + 0.8))
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.3, n + 0.1)
    ax.axis("off")
    for i, (name, _) in enumerate(layering.LAYERS):
        y = i
        ax.add_patch(FancyBboxPatch((2.3, y + 0.08), 6.3, 0.78, boxstyle="round,pad=0.02",
                                    facecolor=plt.cm.Blues(0.15 + 0.6 * i / n),
                                    edgecolor="#2b4d73", linewidth=0.8))
        ax.text(2.15, y + 0.47, f"{i}  {name}", ha="right", va="center", fontsize=9,
                fontweight="bold")
        text = textwrap.fill(", ".join(members[i]), 92)
        ax.text(2.45, y + 0.47, text, ha="left", va="center", fontsize=7.2,
                color="black" if i < n * 0.7 else "white")
        down = sum(c for (la, lb), c in arrows.items() if la == i and lb < i)
        ax.text(8.75, y + 0.47, f"{down} ↓", ha="left", va="center", fontsize=8,
                color="#2b4d73")
    upward = sum(c for (la, lb), c in arrows.items() if lb > la)
    for (la, lb), _count in arrows.items():
        if lb > la:  # drawn only if the layering is broken
            ax.add_patch(FancyArrowPatch((9.4, la + 0.47), (9.4, lb + 0.47), color="red",
                                         arrowstyle="-|>", mutation_scale=12,
                                         connectionstyle="arc3,rad=-0.3"))
    ax.add_patch(FancyArrowPatch((0.25, n - 0.3), (0.25, 0.2), color="#2b4d73",
                                 arrowstyle="-|>", mutation_scale=16, linewidth=1.5))
    ax.text(0.4, n / 2, "imports point down only", rotation=90, va="center", fontsize=8,
            color="#2b4d73")
    total = sum(len(t) for t in graph.values())
    ax.set_title(f"spikebridge: {len(graph)} modules in {n} layers, {total} import arrows "
                 f"({sum(arrows.values())} between layers; {upward} upward, "
                 f"{len(layering.circles(graph))} circles)", fontsize=10)
    ax.text(8.75, -0.25, "n ↓: import arrows from this layer to lower ones", fontsize=7,
            color="#2b4d73", ha="right")
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
