"""What the commands share between parsing and the experiment layer: processes, the model a
method runs on, the run options from the flags, the long-run notice, result files.

Every command that converts or evaluates goes through :mod:`spikebridge.experiments`; this
module only turns parsed flags into its arguments.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from .arguments import (
    DEFAULT_FACTORY_DATASET,
    cos_defaults,
    energy_model,
    model_choices,
    own_model_conflicts,
)
from .messages import one_line_warnings


def multi_process(command):
    """Run ``command(args)`` in every process of the run: start ``--nproc`` processes here, or
    join the ones torchrun started; each gets its own device and only rank 0 prints."""
    import functools

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from .. import distributed

        nproc = distributed.check_process_count(args.nproc)
        launched = distributed.launched_world_size()
        if nproc > 1 and str(args.device).startswith("cuda:"):
            raise distributed.DistributedError(
                f"--device {args.device} names one GPU for {nproc} processes; use --device cuda "
                "(process k takes GPU k) and choose the GPUs with CUDA_VISIBLE_DEVICES")
        limit, batch = getattr(args, "limit", None), getattr(args, "batch_size", None)
        if nproc > 1 and limit and batch and nproc > -(-limit // batch):
            # the processes would find this out only after their start-up (tens of seconds)
            raise distributed.DistributedError(
                f"{nproc} processes share {limit} test images in {-(-limit // batch)} "
                f"batch(es) of {batch}: fewer batches than processes; use --batch-size "
                f"{max(1, limit // nproc)} or less, or --nproc {-(-limit // batch)}")
        if launched is None and nproc > 1:
            return distributed.launch(nproc, run, args)
        if launched is not None and not args.debug:  # a spawned or torchrun process
            warnings.showwarning = one_line_warnings(args.command)
        if launched is not None and nproc not in (1, launched):
            raise distributed.DistributedError(
                f"--nproc {nproc} inside a run of {launched} processes (torchrun): give one of "
                "the two")
        with distributed.process_group(args.device) as device:
            args.device = str(device)
            args.quiet = args.quiet or not distributed.is_main_process()
            return command(args)

    return run


def is_main_process() -> bool:
    """Whether this process writes the results (rank 0, or the only process)."""
    from ..distributed import is_main_process

    return is_main_process()


def print_energy(records: list[dict]) -> None:
    from ..reporting import format_energy_table

    table = format_energy_table(records)
    if table:
        print("\n" + table)


def shipped_model_for(kinds: tuple[str, ...]) -> Path | None:
    """A model shipped in the package whose activation kind one of ``kinds`` is."""
    from ..checkpoint import CheckpointError, load_config
    from ..shipped import SHIPPED_MODEL_DIR, SHIPPED_WEIGHTS_ROOT

    candidates = [SHIPPED_MODEL_DIR, *sorted(d for d in SHIPPED_WEIGHTS_ROOT.iterdir()
                                             if d.is_dir() and d != SHIPPED_MODEL_DIR)]
    for directory in candidates:
        try:
            kind = load_config(directory)["activation"]["kind"]
        except (CheckpointError, KeyError, TypeError):
            continue
        if kind in kinds:
            return directory
    return None


def resolve_model(spec, args: argparse.Namespace) -> Path:
    """The checkpoint directory a method runs on (see --model)."""
    from ..methods import METHODS

    default, by_key = model_choices(args.model)
    method = METHODS[spec.name]
    if spec.name in by_key:
        return by_key[spec.name]
    for kind in method.source_kinds:
        if kind in by_key:
            return by_key[kind]
    if default is not None:
        return default
    shipped = shipped_model_for(method.source_kinds)
    if shipped is None:
        raise ValueError(
            f"no model given for method {spec.name!r} and none of the kind it needs "
            f"({' / '.join(method.source_kinds)}) is shipped: train one with "
            f"`{method.source_hint}` and pass --model {spec.name}=DIR"
        )
    return shipped


def run_options(args: argparse.Namespace):
    """The :class:`~spikebridge.experiments.RunOptions` of a command's flags."""
    from ..experiments import RunOptions

    return RunOptions(
        device=args.device, mode=getattr(args, "mode", "auto"),
        batch_size=getattr(args, "batch_size", 250), limit=getattr(args, "limit", None),
        data_dir=getattr(args, "data_dir", None), workers=getattr(args, "workers", 0),
        progress=not args.quiet,
        allow_unverified=getattr(args, "allow_unverified", False) or None,
        trust_factory=getattr(args, "trust_factory", False),
        ignore_data_mismatch=getattr(args, "ignore_data_mismatch", False),
        calibration_samples=getattr(args, "calibration_samples", None),
        weight_bits=getattr(args, "weight_bits", None),
        weight_rounding=getattr(args, "weight_rounding", "nearest"),
        neuron=getattr(args, "neuron", "if"),
        count_operations=not getattr(args, "no_energy", False), energy=energy_model(args),
        nonfinite="propagate" if getattr(args, "allow_nonfinite", False) else "error",
        **({"input": "sequence", "frames": max(args.T)}
           if getattr(args, "input", "images") == "events" else {}),
    )


def load_model(args: argparse.Namespace, model_dir: Path | None = None):
    """The :class:`~spikebridge.experiments.LoadedModel` of ``--model`` (one directory; the
    shipped model by default) with its test loader (--data-dir / --limit)."""
    from ..experiments import load_model as load
    from ..shipped import SHIPPED_MODEL_DIR

    if model_dir is None:
        default, by_key = model_choices(args.model)
        if by_key:
            raise ValueError("this command takes one --model directory, not key=DIR pairs")
        model_dir = default
    return load(model_dir or SHIPPED_MODEL_DIR, run_options(args))


def announcer(args: argparse.Namespace):
    """The experiment layer's ``announce`` callback: the long-run notice of this command."""
    def announce(estimates: list[tuple[str, float]], images: int, steps: list[int]) -> None:
        announce_long_command(args, estimates, images, steps)

    return announce


def own_model(args: argparse.Namespace, options):
    """The :class:`~spikebridge.experiments.LoadedModel` of ``--model-factory`` (with
    ``--init-weights`` and the test set of ``--dataset``), or ``None`` without it."""
    from ..experiments import load_factory_model

    factory = own_model_conflicts(args)
    if factory is None:
        return None
    return load_factory_model(factory, args.dataset or DEFAULT_FACTORY_DATASET, options,
                              init_weights=args.init_weights)


def run_methods(args: argparse.Namespace, specs: list, steps: list[int]) -> list[dict]:
    """Convert and evaluate each method of ``specs`` on its model (``--model``, or the one
    ``--model-factory`` builds): result records."""
    from ..experiments import run_methods as run

    check_weight_options(args)
    options = run_options(args)
    own = own_model(args, options)
    model_for = (lambda spec: own) if own is not None else (
        lambda spec: resolve_model(spec, args))
    return run(specs, model_for, steps, options, announce=announcer(args))


def run_snns(args: argparse.Namespace, directories: list[Path], steps: list[int]) -> list[dict]:
    """Evaluate saved SNNs (``--snn``): no ANN, no conversion, no calibration data."""
    from ..experiments import run_saved_snns

    return run_saved_snns(directories, steps, run_options(args), announce=announcer(args))


def announce_long_command(args: argparse.Namespace, estimates: list[tuple[str, float]],
                           images: int, steps: list[int]) -> None:
    """One stderr line when the whole command — every method together — is estimated to take
    longer than LONG_RUN_SECONDS (a run of many methods can be long although each is short)."""
    from ..distributed import world_size
    from ..runtime_estimate import LONG_RUN_SECONDS, format_duration

    total = sum(seconds for _, seconds in estimates)
    if not is_main_process() or total <= LONG_RUN_SECONDS:
        return
    share = f" per process, {world_size()} processes" if world_size() > 1 else ""
    parts = ", ".join(f"{label} {format_duration(seconds)}" for label, seconds in estimates
                      if seconds >= 1) if len(estimates) > 1 else ""
    what = (f"{estimates[0][0]} will take" if len(estimates) == 1
            else f"these {len(estimates)} methods will take")
    print(f"spikebridge {args.command}: warning: {what} about {format_duration(total)} to "
          f"simulate {images} images{share} for T={max(steps)}"
          + (f" ({parts})" if parts else "")
          + " (estimated from short probes); use --limit or a smaller --T to shorten it, "
          "Ctrl-C to stop", file=sys.stderr, flush=True)


def check_weight_options(args: argparse.Namespace) -> None:
    if args.weight_bits is not None:
        from ..quantization import check_bits

        check_bits(args.weight_bits)
    elif getattr(args, "weight_rounding", "nearest") != "nearest":
        raise ValueError("--weight-rounding only applies with --weight-bits")


def refuse_with_snn(args: argparse.Namespace, method_flag: str) -> None:
    """With --snn the method, its parameters and the weights are the saved SNN's: options that
    would choose them are refused, not ignored."""
    given = [flag for flag, value in (
        ("--model", args.model), (method_flag, getattr(args, method_flag[2:], None)),
        *((flag, getattr(args, flag[2:].replace("-", "_"), None)) for flag in (
            "--model-factory", "--factory-arg", "--init-weights", "--dataset")),
        ("--weight-bits", args.weight_bits), ("--calibration-samples", args.calibration_samples),
        ("--weight-rounding", None if getattr(args, "weight_rounding", "nearest") == "nearest"
         else args.weight_rounding),
        ("--neuron", None if getattr(args, "neuron", "if") == "if" else args.neuron),
        *((f"--{key}", getattr(args, key, None)) for key in cos_defaults()),
    ) if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)} do(es) not apply with --snn: a saved SNN was "
                         "converted with its method, parameters and weights once and for all "
                         "(`spikebridge convert`)")


def write_comparison(records: list[dict], out: Path) -> None:
    from ..reporting import plot_accuracy, write_csv, write_json

    write_json(out / "results.json", {"results": records})
    write_csv(out / "results.csv", records)
    plot_accuracy(records, out / "accuracy_vs_T.png")
    print(f"wrote {out / 'results.json'}, {out / 'results.csv'}, {out / 'accuracy_vs_T.png'}")
    if any(rec.get("ops") for rec in records):
        from ..reporting import plot_accuracy_vs_energy

        print(f"wrote {plot_accuracy_vs_energy(records, out / 'accuracy_vs_energy.png')}")
