"""``spikebridge evaluate``: one method (or saved SNN), accuracy at every T.
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
from .runs import is_main_process, multi_process, print_energy, refuse_with_snn


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="convert a trained ANN and measure the SNN's accuracy at every T",
        description="Convert a checkpoint (or a model from --model-factory) with one method, "
        "simulate the test set once for "
        "max(T) steps and report the accuracy at each requested T (running mean of the output "
        "layer) next to the ANN's.",
    )
    add_model_and_data(p)
    add_own_model_options(p)
    p.add_argument("--method", default=None, help="one " + METHODS_HELP.format(
        ", ".join(method_names())) + " Default qcfs.")
    p.add_argument("--snn", default=None, metavar="DIR",
                   help="evaluate an SNN saved by `spikebridge convert` instead of converting "
                   "--model (no ANN, no calibration pass)")
    p.add_argument("--T", type=step_list, default=[1, 2, 4, 8, 16, 32],
                   help="comma-separated time-steps (default 1,2,4,8,16,32)")
    p.add_argument("--json", type=Path, default=None, help="write the result record here")
    add_cos_options(p)
    add_energy_options(p)
    add_input_option(p)
    add_process_options(p)
    add_common(p)
    p.set_defaults(func=run)


@multi_process
def run(args: argparse.Namespace) -> int:
    from ..checkpoint import check_output_file
    from ..reporting import format_accuracy_table, write_json

    if args.snn is not None:
        refuse_with_snn(args, "--method")
        directories = snn_directories(args.snn)
        if len(directories) != 1:
            raise ValueError("evaluate takes one --snn directory; use `spikebridge compare "
                             "--snn D1,D2` for several")
    else:
        specs = method_specs(args.method or "qcfs", args)
        if len(specs) != 1:
            raise ValueError("evaluate takes one --method; use `spikebridge compare --methods` "
                             "for several")
    if args.json is not None:
        check_output_file(args.json)
    records = (runs.run_snns(args, directories, args.T) if args.snn is not None
               else runs.run_methods(args, specs, args.T))
    print(format_accuracy_table(records))
    print_energy(records)
    if args.json and is_main_process():
        write_json(args.json, records[0])
        print(f"wrote {args.json}")
    return 0
