"""``spikebridge convert``: convert a checkpoint once and save the SNN (docs/export.md).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..calibration import DEFAULT_CALIBRATION_SAMPLES
from .arguments import (
    DEFAULT_FACTORY_DATASET,
    METHODS_HELP,
    add_common,
    add_cos_options,
    add_neuron_option,
    add_own_model_options,
    add_trust_factory,
    batch_count,
    method_names,
    one_method,
    own_model_conflicts,
    positive_int,
)
from .runs import check_weight_options, resolve_model, run_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="convert a trained ANN once and save the SNN (for evaluate --snn)",
        description="Convert a checkpoint with one method — BatchNorm folded, data-based "
        "statistics measured, weights quantized — and save the SNN as a hashed directory "
        "(docs/export.md). `evaluate --snn DIR` then simulates it without the ANN or any "
        "calibration pass; spikebridge.load_snn(DIR) loads it in Python.",
    )
    p.add_argument("--model", default=None, help="checkpoint directory from `spikebridge "
                   "train` (default: the shipped model of the kind the method needs)")
    p.add_argument("--method", default="qcfs", help="one " + METHODS_HELP.format(
        ", ".join(method_names())) + " Default qcfs.")
    p.add_argument("--out", type=Path, required=True, help="directory to write the SNN to")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an SNN already in --out (atomically)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="directory with the dataset's files (data-based methods read training "
                   "images from it)")
    p.add_argument("--calibration-samples", type=positive_int, default=None,
                   help="training images that data-based methods measure their statistics on "
                   f"(default {DEFAULT_CALIBRATION_SAMPLES}); refused for other methods")
    p.add_argument("--weight-bits", type=int, default=None,
                   help="quantize every conv/linear weight to b-bit signed integers (2..16)")
    p.add_argument("--weight-rounding", choices=("nearest", "trunc", "ecc"), default="nearest",
                   help="with --weight-bits: nearest (default), trunc, or ECC's own grid")
    add_neuron_option(p)
    p.add_argument("--batch-size", type=batch_count, default=250)
    p.add_argument("--allow-unverified", action="store_true",
                   help="convert a checkpoint without (or failing) the SHA-256 manifest check")
    add_trust_factory(p)
    add_cos_options(p)
    add_own_model_options(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import check_output_dir, load_checkpoint
    from ..experiments import convert_model, factory_ann, run_label
    from ..methods import get_method
    from ..snn_artefact import save_snn

    (spec,) = one_method(args)
    check_output_dir(args.out)
    if not args.overwrite and any(
            os.path.lexists(args.out / name) for name in ("current", "config.json")):
        raise ValueError(f"{args.out} already holds an SNN or checkpoint; pass --overwrite to "
                         "replace it (atomically) or choose another --out")
    check_weight_options(args)
    factory = own_model_conflicts(args)
    if factory is not None:
        model_dir, origin = None, factory.describe()
        ann, config = factory_ann(factory, args.dataset or DEFAULT_FACTORY_DATASET,
                                  run_options(args), init_weights=args.init_weights)
    else:
        model_dir = origin = resolve_model(spec, args)
        ann, config = load_checkpoint(model_dir, device=args.device,
                                      allow_unverified=args.allow_unverified or None,
                                      trust_factory=args.trust_factory)
    method = get_method(spec.name, **spec.params)
    snn, calibration = convert_model(ann, config, method, run_options(args))
    save_snn(snn.cpu(), args.out, ann_config=config, source=model_dir, overwrite=args.overwrite,
             conversion={"calibration_samples": None if calibration is None
                         else calibration.samples, "label": run_label(spec, args.neuron)})
    print(f"wrote {args.out} ({run_label(spec, args.neuron)} SNN of {origin}; evaluate it with "
          f"`spikebridge evaluate --snn {args.out}`)")
    return 0
