"""``spikebridge compare``: several methods side by side: table, JSON, CSV, plots.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import runs
from .arguments import (
    METHODS_HELP,
    add_common,
    add_cos_options,
    add_energy_options,
    add_input_option,
    add_model_and_data,
    add_own_model_options,
    add_process_options,
    method_names,
    method_specs,
    snn_directories,
    step_list,
)
from .runs import is_main_process, multi_process, print_energy, refuse_with_snn, write_comparison


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="several methods side by side: table, JSON, CSV and a PNG plot",
        description="Evaluate several conversion methods on the same model and test images.",
    )
    add_model_and_data(p)
    add_own_model_options(p)
    p.add_argument("--methods", default=None, help="comma-separated; each a "
                   + METHODS_HELP.format(", ".join(method_names())) + " Default qcfs,cos.")
    p.add_argument("--snn", default=None, metavar="D1[,D2...]",
                   help="compare SNNs saved by `spikebridge convert` instead of converting "
                   "--model")
    p.add_argument("--T", type=step_list, default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--out", type=Path, default=Path("out/compare"),
                   help="directory for results.json, results.csv, accuracy_vs_T.png and "
                   "accuracy_vs_energy.png")
    add_cos_options(p)
    add_energy_options(p)
    add_input_option(p)
    add_process_options(p)
    add_common(p)
    p.set_defaults(func=run)


@multi_process
def run(args: argparse.Namespace) -> int:
    from ..checkpoint import check_output_dir
    from ..reporting import format_accuracy_table

    if args.snn is not None:
        refuse_with_snn(args, "--methods")
        check_output_dir(args.out)
        records = runs.run_snns(args, snn_directories(args.snn), args.T)
    else:
        specs = method_specs(args.methods or "qcfs,cos", args)
        check_output_dir(args.out)
        records = runs.run_methods(args, specs, args.T)
    print(format_accuracy_table(records))
    print_energy(records)
    if is_main_process():
        write_comparison(records, args.out)
    return 0
