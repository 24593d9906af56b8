"""``spikebridge export``: write a saved SNN as a NIR graph (docs/export.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .arguments import add_common


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a saved SNN to NIR, for other simulators and chips",
        description="Write a saved SNN (`spikebridge convert --out DIR`) as a NIR graph "
        "(HDF5). Every neuron keeps its exact semantics: hard reset as nir.IF with the "
        "threshold one float32 step lower (NIR fires on v > θ, we on v ≥ θ), reset by "
        "subtraction as an integrator + threshold + Scale(-θ) sub-graph with a recurrent edge, "
        "initial potentials in the neuron's metadata. COS, signed neurons and ECC's "
        "residual-elimination current are refused (docs/export.md says why).",
    )
    p.add_argument("--snn", type=Path, required=True, help="directory written by "
                   "`spikebridge convert`")
    p.add_argument("--format", choices=("nir",), default="nir")
    p.add_argument("--out", type=Path, required=True, help="file to write (e.g. model.nir)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="export an SNN directory without (or failing) its SHA-256 manifest check")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import check_output_file
    from ..nir_export import write_nir
    from ..snn_artefact import load_snn

    check_output_file(args.out)
    snn = load_snn(args.snn, allow_unverified=args.allow_unverified or None)
    write_nir(snn, args.out)
    print(f"wrote {args.out} (NIR graph of the {snn.method.name} SNN in {args.snn}; "
          "load it with spikebridge.load_nir or any NIR importer, docs/export.md)")
    return 0
