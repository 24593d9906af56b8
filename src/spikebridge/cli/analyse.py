"""``spikebridge analyse``: offset-spike statistics per IF layer (docs/methods.md §4.8).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .arguments import (
    add_common,
    add_energy_options,
    add_model_and_data,
    count_list,
    energy_model,
    step_count,
)
from .runs import load_model, run_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyse", aliases=["analyze"],
        help="offset-spike statistics per IF layer, with 0, 1, 2, ... COS iterations",
        description="Offset spikes (desired minus actual spike count, COS paper Definition 1) "
        "of every IF layer, without calibration and with COS at each iteration count; the "
        "output layer's Ratio (share of exact matches) and MSE (COS paper Table 3). Writes "
        "offsets.json and offsets.png.",
    )
    add_model_and_data(p, conversion=False)
    p.set_defaults(limit=1000)
    p.add_argument("--T", type=step_count, default=None,
                   help="time-steps (default: the model's QCFS levels L, the paper's setting; a "
                   "T that is not a multiple of L makes the desired spike count fractional)")
    p.add_argument("--rho", type=step_count, default=None,
                   help="pre-simulation steps ρ of the COS runs (default 4)")
    p.add_argument("--snn", type=Path, default=None, metavar="DIR",
                   help="analyse an SNN saved by `spikebridge convert` against the ANN it was "
                   "converted from (recorded in it; or --model), instead of 0, 1, 2, … "
                   "iterations")
    p.add_argument("--iterations", type=count_list, default=None,
                   help="COS iteration counts to compare (default 0,1,2,4; 0 = no calibration)")
    p.add_argument("--out", type=Path, default=Path("out/analyse"))
    add_energy_options(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import check_output_dir
    from ..experiments import compare_iterations
    from ..reporting import format_offset_table, plot_offsets, write_json

    if args.snn is not None:
        return _analyse_snn(args)
    args.iterations = [0, 1, 2, 4] if args.iterations is None else args.iterations
    if args.rho is not None and not any(args.iterations):
        raise ValueError("--rho only applies to COS runs, and --iterations "
                         f"{','.join(map(str, args.iterations))} has none (0 = no calibration)")
    args.rho = 4 if args.rho is None else args.rho
    check_output_dir(args.out)
    energy_model(args)  # refuses energy flags that --no-energy makes void, before any work
    model = load_model(args)
    ann, config, loader, label = model.ann, model.config, model.loader, model.label
    levels = int(config["activation"].get("levels", 4))
    steps = args.T or levels
    if steps % levels:
        print(f"spikebridge {args.command}: warning: T={steps} is not a multiple of the model's "
              f"L={levels}, so the desired spike count a/θ·T is not an integer and ψ is "
              "fractional: Ratio counts only |ψ| < 0.01 and the per-layer distribution rounds ψ; "
              f"the COS paper's setting is T = L = {levels}", file=sys.stderr, flush=True)
    reports = compare_iterations(ann, loader, steps, args.iterations, rho=args.rho,
                                 progress=not args.quiet)
    print(format_offset_table(reports))
    first = next(iter(reports.values()))
    print("\nper-layer Ratio % (share of neurons with no offset spike):")
    print(f"{'iterations':>10} " + " ".join(f"{'L' + str(i + 1):>7}"
                                           for i in range(len(first.layers))))
    for k, rep in reports.items():
        print(f"{k:>10} " + " ".join(f"{v['ratio'] * 100:>7.2f}" for v in rep.layers.values()))
    write_json(args.out / "offsets.json", {
        "model": label, "dataset": config["dataset"], "T": steps, "rho": args.rho,
        "iterations": {str(k): rep.to_dict() for k, rep in reports.items()},
    })
    plot_offsets(reports, args.out / "offsets.png")
    print(f"wrote {args.out / 'offsets.json'}, {args.out / 'offsets.png'}")
    if not args.no_energy:  # firing rates and synaptic operations per layer (docs/energy.md)
        from ..experiments import iteration_operations
        from ..reporting import plot_layer_operations

        runs = iteration_operations(ann, loader, steps, args.iterations, rho=args.rho,
                                    energy=energy_model(args), progress=not args.quiet)
        write_json(args.out / "operations.json", {"model": label, "dataset": config["dataset"],
                                                  "T": steps, "rho": args.rho, "runs": runs})
        plot_layer_operations(runs, steps, args.out / "layer_operations.png")
        print(f"wrote {args.out / 'operations.json'}, {args.out / 'layer_operations.png'}")
    return 0


def _source_ann_of(args: argparse.Namespace, snn) -> Path:
    """The ANN checkpoint a saved SNN was converted from: ``--model``, or the directory the SNN
    records, accepted only if its manifest still has the recorded SHA-256."""
    import hashlib

    from ..checkpoint import MANIFEST_FILE

    if args.model is not None:
        return Path(args.model)
    source = snn.config.get("source", {})
    directory, digest = source.get("directory"), source.get("manifest_sha256")
    if not directory:
        raise ValueError(f"{args.snn} does not record the ANN it was converted from; pass "
                         "--model DIR")
    manifest = Path(directory) / MANIFEST_FILE
    if digest and (not manifest.is_file()
                   or hashlib.sha256(manifest.read_bytes()).hexdigest() != digest):
        raise ValueError(f"{directory} no longer holds the ANN {args.snn} was converted from "
                         "(its manifest's SHA-256 differs from the recorded one); pass --model DIR")
    return Path(directory)


def _analyse_snn(args: argparse.Namespace) -> int:
    from ..analysis import analyse_offsets
    from ..checkpoint import check_output_dir, load_checkpoint
    from ..experiments import test_loader
    from ..reporting import format_offset_table, write_json
    from ..snn_artefact import load_snn

    given = [flag for flag, value in (("--iterations", args.iterations), ("--rho", args.rho))
             if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)} do(es) not apply with --snn: the saved SNN's own "
                         "method and parameters are analysed")
    check_output_dir(args.out)
    snn = load_snn(args.snn, allow_unverified=args.allow_unverified or None)
    ann, config = load_checkpoint(_source_ann_of(args, snn), device=args.device,
                                  allow_unverified=args.allow_unverified or None,
                                  trust_factory=args.trust_factory)
    loader, label = test_loader(snn.config, args.snn, run_options(args))
    steps = args.T or int(config["activation"].get("levels", 4))
    report = analyse_offsets(ann, snn, list(loader), steps, progress=not args.quiet)
    name = snn.method.name
    print(format_offset_table({name: report}))
    write_json(args.out / "offsets.json", {"model": label, "snn": str(args.snn),
                                           "dataset": config["dataset"], "T": steps,
                                           "report": report.to_dict()})
    print(f"wrote {args.out / 'offsets.json'}")
    return 0
