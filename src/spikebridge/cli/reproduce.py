"""``spikebridge reproduce``: a paper row (COS, or ECC's DVS row), ours beside the paper's
(docs/reproduce.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .arguments import (
    add_common,
    add_follow_links,
    add_neuron_option,
    add_process_options,
    batch_count,
    positive_int,
    step_list,
)
from .runs import is_main_process, multi_process


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce", help="a paper row: our accuracy per T beside the paper's (COS recipes: "
        "QCFS and COS; ECC recipes: ECC on event frames)",
        description="Convert a model trained with `spikebridge train --recipe NAME` with the "
        "recipe's methods — a COS recipe: QCFS and COS (ρ from the recipe); an ECC recipe: ECC "
        "(κ, η from the recipe, calibrated on training recordings), the SNN run on the test "
        "recordings' event frames — simulate the test set and print, per T, our accuracy, the "
        "paper's and the gap (ours − paper) (docs/reproduce.md). The model must be the "
        "recipe's: same architecture, dataset and activation (QCFS L, or ReLU).",
    )
    p.add_argument("--recipe", required=True,
                   help="recipe name (`spikebridge info` lists them) or a .toml file")
    p.add_argument("--model", required=True, type=Path,
                   help="checkpoint directory trained from the recipe")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="directory with the dataset's files")
    add_follow_links(p)
    p.add_argument("--T", type=step_list, default=None,
                   help="comma-separated time-steps (default: the recipe's: 1,2,4,8,16,32 for "
                   "the COS rows, 48 frames for ECC's DVS row)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="evaluate on a fixed random subset of N test images (default: all)")
    p.add_argument("--batch-size", type=batch_count, default=250)
    p.add_argument("--mode", choices=("auto", "step", "layer", "hybrid"), default="auto",
                   help="simulation execution style (results are identical)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="load a checkpoint without (or failing) the SHA-256 manifest check")
    p.add_argument("--ignore-data-mismatch", action="store_true",
                   help="evaluate even if the test images differ from those the checkpoint "
                   "was evaluated on when it was trained (its recorded test_fingerprint)")
    p.add_argument("--calibration-samples", type=positive_int, default=None,
                   help="ECC recipes: training recordings ECC's current normalization measures "
                   "on (default 1000)")
    add_neuron_option(p)
    p.add_argument("--json", type=Path, default=None, help="write the record here")
    add_process_options(p)
    add_common(p)
    p.set_defaults(func=run)


@multi_process
def run(args: argparse.Namespace) -> int:
    from ..checkpoint import check_output_file
    from ..recipes import load_recipe
    from ..reporting import write_json
    from ..reproduce import format_reproduction, reproduce

    recipe = load_recipe(args.recipe)
    if args.json is not None:
        check_output_file(args.json)
    record = reproduce(recipe, args.model, steps=args.T, data_dir=args.data_dir,
                       limit=args.limit, batch_size=args.batch_size, device=args.device,
                       mode=args.mode, progress=not args.quiet,
                       allow_unverified=args.allow_unverified or None,
                       ignore_data_mismatch=args.ignore_data_mismatch, workers=args.workers,
                       calibration_samples=args.calibration_samples, neuron=args.neuron)
    if not is_main_process():
        return 0
    print(format_reproduction(record))
    if args.json:
        write_json(args.json, record)
        print(f"wrote {args.json}")
    return 0
