"""The ``spikebridge`` command: train | evaluate | compare | analyse | demo.

Every subcommand has ``--help``; long work shows progress bars (``--quiet`` hides them).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

__all__ = ["main"]

DESCRIPTION = """\
spikebridge: turn trained ANNs into spiking neural networks (SNNs) that keep the ANN's
accuracy at very few time-steps.

  spikebridge demo                     QCFS vs COS on the shipped Fashion-MNIST model
  spikebridge train --out runs/m1      train a QCFS ANN (writes model.safetensors + config.json)
  spikebridge evaluate --model runs/m1 --method cos --rho 4 --T 1,2,4,8
  spikebridge compare --methods qcfs,cos --T 1,2,4,8,16,32
  spikebridge analyse --iterations 0,1,2,4     offset-spike statistics (COS paper Fig. 1/3, Table 3)

Run `spikebridge COMMAND --help` for the options of each command.
"""


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--device", default="cpu",
                        help="torch device, e.g. cpu or cuda (default cpu)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train an ANN with a spiking-friendly activation (QCFS by default)",
        description="Train an ANN (SGD + momentum, cosine schedule, weight decay) and write a "
        "checkpoint directory: model.safetensors + config.json (+ train_state.pt for --resume). "
        "Files are written atomically after every epoch.",
    )
    p.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    p.add_argument("--model", default="fashion_cnn", help="architecture (default fashion_cnn; "
                   "see `spikebridge info`)")
    p.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist (default), mnist, digits")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="directory with the dataset's IDX files (default: the Debian package's)")
    p.add_argument("--activation", default="qcfs:L=4,theta=2",
                   help="qcfs:L=4,theta=2 (default) | clipped_relu:theta=2 | relu")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    p.add_argument("--train-subset", type=int, default=None,
                   help="train on the first N samples of a fixed shuffle (quick runs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    p.add_argument("--no-channels-last", action="store_true",
                   help="keep NCHW memory format (channels_last is faster on CPU)")
    p.add_argument("--resume", action="store_true", help="continue from the last finished epoch")
    _add_common(p)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .activations import ActivationSpec
    from .train import TrainConfig, train

    cfg = TrainConfig(
        architecture=args.model, dataset=args.dataset,
        activation=ActivationSpec.parse(args.activation), epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, seed=args.seed, augment=not args.no_augment,
        train_subset=args.train_subset, channels_last=not args.no_channels_last,
        compile=args.compile,
    )
    command = "spikebridge " + shlex.join(sys.argv[1:]) if sys.argv[1:] else None
    config = train(cfg, args.out, data_dir=args.data_dir, resume=args.resume,
                   progress=not args.quiet, command=command, device=args.device)
    print(f"wrote {args.out} (test accuracy {config['test_accuracy']:.2%})")
    return 0


def _add_model_and_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=None,
                   help="checkpoint directory from `spikebridge train` (default: the shipped "
                   "Fashion-MNIST model)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="directory with the dataset's IDX files (default: the Debian package's)")
    p.add_argument("--limit", type=int, default=None,
                   help="evaluate on a fixed random subset of N test images (default: all)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--mode", choices=("auto", "step", "layer", "hybrid"), default="auto",
                   help="execution: step-by-step, layer-wise, or hybrid (COS: first ρ frames "
                   "layer-wise, then step by step); auto picks the fastest the method allows")


def _add_cos_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("COS options (methods.md §4)")
    g.add_argument("--rho", type=int, default=4, help="pre-simulation steps ρ (default 4)")
    g.add_argument("--iterations", type=int, default=1,
                   help="±1-spike corrections per neuron (default 1; 0 = plain QCFS)")
    g.add_argument("--variant", choices=("shift", "lightweight"), default="shift")
    g.add_argument("--epsilon", type=float, default=1e-3, help="ε as a fraction of θ")


def _method_params(name: str, args: argparse.Namespace) -> dict:
    if name == "cos":
        return {"rho": args.rho, "iterations": args.iterations, "variant": args.variant,
                "epsilon": args.epsilon}
    return {}


def _load(args: argparse.Namespace):
    """(ANN, config, test loader, model label) for --model / --data-dir / --limit."""
    from .checkpoint import load_checkpoint
    from .data import BatchLoader, load_dataset
    from .shipped import SHIPPED_MODEL_DIR

    model_dir = args.model or SHIPPED_MODEL_DIR
    ann, config = load_checkpoint(model_dir, device=args.device)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    test = load_dataset(config["dataset"], "test", args.data_dir).subset(args.limit, seed=0)
    if test.in_channels != config["in_channels"] or test.num_classes != config["num_classes"]:
        raise ValueError(
            f"the model expects {config['in_channels']} channel(s) and {config['num_classes']} "
            f"classes but {test.name} has {test.in_channels} and {test.num_classes}"
        )
    label = f"{config['architecture']} ({Path(model_dir).name})"
    return ann, config, BatchLoader(test, args.batch_size), label


def _run_methods(args: argparse.Namespace, methods: list[str], steps: list[int]):
    import torch

    from .convert import convert
    from .reporting import evaluation_record
    from .simulate import evaluate, resolve_mode

    ann, config, loader, label = _load(args)
    records = []
    for i, name in enumerate(methods):
        snn = convert(ann, name, **_method_params(name, args))
        result = evaluate(snn, loader, steps, ann=ann if i == 0 else None, mode=args.mode,
                          device=args.device, progress=not args.quiet,
                          description=f"{name}: simulating T={max(steps)}")
        record = evaluation_record(result, snn, steps, dataset=config["dataset"], model=label,
                                   extra={"mode": resolve_mode(snn, args.mode,
                                                               torch.device(args.device)),
                                          "device": str(args.device)})
        if i > 0:
            record["ann_accuracy"] = records[0]["ann_accuracy"]
        records.append(record)
    return records


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="convert a trained ANN and measure the SNN's accuracy at every T",
        description="Convert a checkpoint with one method, simulate the test set once for "
        "max(T) steps and report the accuracy at each requested T (running mean of the output "
        "layer) next to the ANN's.",
    )
    _add_model_and_data(p)
    p.add_argument("--method", default="qcfs", help="qcfs (default) or cos")
    p.add_argument("--T", type=_int_list, default=[1, 2, 4, 8, 16, 32],
                   help="comma-separated time-steps (default 1,2,4,8,16,32)")
    p.add_argument("--json", type=Path, default=None, help="write the result record here")
    _add_cos_options(p)
    _add_common(p)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .reporting import format_accuracy_table, write_json

    records = _run_methods(args, [args.method.lower()], args.T)
    print(format_accuracy_table(records))
    if args.json:
        write_json(args.json, records[0])
        print(f"wrote {args.json}")
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="several methods side by side: table, JSON, CSV and a PNG plot",
        description="Evaluate several conversion methods on the same model and test images.",
    )
    _add_model_and_data(p)
    p.add_argument("--methods", default="qcfs,cos", help="comma-separated (default qcfs,cos)")
    p.add_argument("--T", type=_int_list, default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--out", type=Path, default=Path("out/compare"),
                   help="directory for results.json, results.csv, accuracy_vs_T.png")
    _add_cos_options(p)
    _add_common(p)
    p.set_defaults(func=_cmd_compare)


def _write_comparison(records: list[dict], out: Path) -> None:
    from .reporting import plot_accuracy, write_csv, write_json

    write_json(out / "results.json", {"results": records})
    write_csv(out / "results.csv", records)
    plot_accuracy(records, out / "accuracy_vs_T.png")
    print(f"wrote {out / 'results.json'}, {out / 'results.csv'}, {out / 'accuracy_vs_T.png'}")


def _cmd_compare(args: argparse.Namespace) -> int:
    from .reporting import format_accuracy_table

    methods = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise ValueError("--methods needs at least one method")
    records = _run_methods(args, methods, args.T)
    print(format_accuracy_table(records))
    _write_comparison(records, args.out)
    return 0


def _add_analyse(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyse", aliases=["analyze"],
        help="offset-spike statistics per IF layer, with 0, 1, 2, ... COS iterations",
        description="Offset spikes (desired minus actual spike count, COS paper Definition 1) "
        "of every IF layer, without calibration and with COS at each iteration count; the "
        "output layer's Ratio (share of exact matches) and MSE (COS paper Table 3). Writes "
        "offsets.json and offsets.png.",
    )
    _add_model_and_data(p)
    p.set_defaults(limit=1000)
    p.add_argument("--T", type=int, default=None,
                   help="time-steps (default: the model's QCFS levels L, the paper's setting)")
    p.add_argument("--rho", type=int, default=4, help="pre-simulation steps ρ (default 4)")
    p.add_argument("--iterations", type=_int_list, default=[0, 1, 2, 4],
                   help="COS iteration counts to compare (default 0,1,2,4; 0 = no calibration)")
    p.add_argument("--out", type=Path, default=Path("out/analyse"))
    _add_common(p)
    p.set_defaults(func=_cmd_analyse)


def _cmd_analyse(args: argparse.Namespace) -> int:
    from .analysis import compare_iterations
    from .reporting import format_offset_table, plot_offsets, write_json

    ann, config, loader, label = _load(args)
    steps = args.T or int(config["activation"].get("levels", 4))
    if any(k < 0 for k in args.iterations):
        raise ValueError("COS iterations must be >= 0")
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
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="QCFS vs COS on the shipped Fashion-MNIST model (what `make demo` runs)",
        description="Convert the shipped Fashion-MNIST QCFS model, simulate it with plain QCFS "
        "and with COS (ρ = 4) at T = 1..32, print the ANN vs SNN table and write a PNG plot.",
    )
    p.add_argument("--retrain", action="store_true",
                   help="retrain the model first with the command recorded in its model card")
    p.add_argument("--epochs", type=int, default=None,
                   help="with --retrain: override the number of epochs")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--limit", type=int, default=2000,
                   help="test images to simulate (default 2000, a fixed random subset; "
                   "0 = all 10000)")
    p.add_argument("--T", type=_int_list, default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--mode", choices=("auto", "step", "layer", "hybrid"), default="auto")
    _add_cos_options(p)
    _add_common(p)
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .checkpoint import load_config
    from .reporting import format_accuracy_table
    from .shipped import SHIPPED_MODEL_DIR

    args.model = None
    if args.limit == 0:
        args.limit = None
    if args.retrain:
        from .activations import ActivationSpec
        from .train import TrainConfig, train

        shipped = load_config(SHIPPED_MODEL_DIR)["training"]
        shipped["activation"] = ActivationSpec.from_dict(shipped["activation"])
        if args.epochs is not None:
            shipped["epochs"] = args.epochs
        args.model = args.out / "retrained_model"
        print(f"retraining {SHIPPED_MODEL_DIR.name} into {args.model} ...")
        train(TrainConfig(**shipped), args.model, data_dir=args.data_dir,
              progress=not args.quiet, device=args.device,
              command="spikebridge " + shlex.join(sys.argv[1:]))
    model = args.model or SHIPPED_MODEL_DIR
    subset = "all" if args.limit is None else f"a fixed random subset of {args.limit}"
    print(f"spikebridge demo: model {model}\n"
          f"converting it to an SNN (IF neurons) and simulating {subset} Fashion-MNIST test "
          f"images for T = {','.join(map(str, args.T))} with plain QCFS and with COS "
          f"(ρ = {args.rho}); `--limit 0` uses all 10 000.")
    records = _run_methods(args, ["qcfs", "cos"], args.T)
    print(format_accuracy_table(records))
    _write_comparison(records, args.out)
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="list models, datasets, methods and the shipped model")
    p.set_defaults(func=_cmd_info)


def _cmd_info(_args: argparse.Namespace) -> int:
    from . import __version__
    from .data import list_datasets
    from .methods import list_methods
    from .models import list_models
    from .shipped import SHIPPED_MODEL_DIR

    print(f"spikebridge {__version__}")
    print(f"models:   {', '.join(list_models())}")
    print(f"datasets: {', '.join(list_datasets())}")
    print(f"methods:  {', '.join(list_methods())}")
    print(f"shipped model: {SHIPPED_MODEL_DIR}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikebridge", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_evaluate(sub)
    _add_compare(sub)
    _add_analyse(sub)
    _add_demo(sub)
    _add_info(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .checkpoint import CheckpointError
    from .data import DatasetNotFoundError, IdxFormatError

    try:
        return args.func(args)
    except (CheckpointError, DatasetNotFoundError, IdxFormatError, ValueError) as exc:
        print(f"spikebridge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
