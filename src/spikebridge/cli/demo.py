"""``spikebridge demo``: QCFS vs COS on the shipped Fashion-MNIST model (``make demo``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from . import runs
from .arguments import (
    add_common,
    add_cos_options,
    add_energy_options,
    add_follow_links,
    batch_count,
    int_at_least,
    method_specs,
    positive_int,
    step_list,
)
from .runs import print_energy, write_comparison


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="QCFS vs COS on the shipped Fashion-MNIST model (what `make demo` runs)",
        description="Convert the shipped Fashion-MNIST QCFS model, simulate it with plain QCFS "
        "and with COS (ρ = 4) at T = 1..32, print the ANN vs SNN table and write a PNG plot.",
    )
    p.add_argument("--retrain", action="store_true",
                   help="retrain the model first with the command recorded in its model card")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="with --retrain: override the number of epochs")
    p.add_argument("--data-dir", type=Path, default=None)
    add_follow_links(p)
    p.add_argument("--limit", type=int_at_least(0), default=2000,
                   help="test images to simulate (default 2000, a fixed random subset; "
                   "0 = all 10000)")
    p.add_argument("--T", type=step_list, default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--batch-size", type=batch_count, default=250)
    p.add_argument("--mode", choices=("auto", "step", "layer", "hybrid"), default="auto")
    add_cos_options(p)
    add_energy_options(p)
    add_common(p)
    p.set_defaults(func=run, calibration_samples=None, weight_bits=None,
                   allow_nonfinite=False, ignore_data_mismatch=False)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import check_output_dir, load_config
    from ..reporting import format_accuracy_table
    from ..shipped import SHIPPED_MODEL_DIR

    args.model = None
    if args.limit == 0:
        args.limit = None
    if args.epochs is not None and not args.retrain:
        raise ValueError("--epochs only applies with --retrain")
    specs = method_specs("qcfs,cos", args)
    check_output_dir(args.out)
    if args.retrain:
        from ..activations import ActivationSpec
        from ..train import TrainConfig, train

        shipped = load_config(SHIPPED_MODEL_DIR)["training"]
        shipped["activation"] = ActivationSpec.from_dict(shipped["activation"])
        if args.epochs is not None:
            shipped["epochs"] = args.epochs
        args.model = args.out / "retrained_model"
        print(f"retraining {SHIPPED_MODEL_DIR.name} into {args.model} ...")
        train(TrainConfig(**shipped), args.model, data_dir=args.data_dir, overwrite=True,
              progress=not args.quiet, device=args.device,
              command="spikebridge " + shlex.join(sys.argv[1:]))
    model = args.model or SHIPPED_MODEL_DIR
    args.model = None if args.model is None else str(args.model)
    subset = "all" if args.limit is None else f"a fixed random subset of {args.limit}"
    print(f"spikebridge demo: model {model}\n"
          f"converting it to an SNN (IF neurons) and simulating {subset} Fashion-MNIST test "
          f"images for T = {','.join(map(str, args.T))} with plain QCFS and with COS "
          f"(ρ = {specs[1].params['rho']}); `--limit 0` uses all 10 000.")
    records = runs.run_methods(args, specs, args.T)
    print(format_accuracy_table(records))
    print_energy(records)
    write_comparison(records, args.out)
    return 0
