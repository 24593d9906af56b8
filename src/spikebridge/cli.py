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
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikebridge", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
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
