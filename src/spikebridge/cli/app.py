"""The ``spikebridge`` command: the parser of every subcommand and ``main``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings

from . import analyse as analyse_command
from . import check as check_command
from . import compare as compare_command
from . import convert as convert_command
from . import demo as demo_command
from . import evaluate as evaluate_command
from . import export as export_command
from . import info as info_command
from . import reproduce as reproduce_command
from . import train as train_command
from .arguments import Parser
from .messages import describe_failure, one_line_warnings

DESCRIPTION = """\
spikebridge: turn trained ANNs into spiking neural networks (SNNs) that keep the ANN's
accuracy at very few time-steps.

  spikebridge demo                     QCFS vs COS on the shipped Fashion-MNIST model
  spikebridge train --out runs/m1      train a QCFS ANN (writes model.safetensors + config.json)
  spikebridge evaluate --model runs/m1 --method cos --rho 4 --T 1,2,4,8
  spikebridge compare --methods qcfs,cos --T 1,2,4,8,16,32
  spikebridge analyse --iterations 0,1,2,4     offset-spike statistics (COS paper Fig. 1/3, Table 3)
  spikebridge check --model-factory mynet:build     does your own model convert? every problem
  spikebridge train --model-factory mynet:build --init-weights relu.pt --activation qcfs:L=4
                    --lr 0.01 --epochs 2 --out runs/mine    fine-tune your ReLU model as QCFS
  spikebridge train --recipe cifar100-vgg16 --out runs/c100    a COS paper row (docs/reproduce.md)
  spikebridge reproduce --recipe cifar100-vgg16 --model runs/c100   ours vs the paper, per T

Run `spikebridge COMMAND --help` for the options of each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="spikebridge", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train_command.add_parser(sub)
    convert_command.add_parser(sub)
    check_command.add_parser(sub)
    export_command.add_parser(sub)
    evaluate_command.add_parser(sub)
    compare_command.add_parser(sub)
    analyse_command.add_parser(sub)
    demo_command.add_parser(sub)
    reproduce_command.add_parser(sub)
    info_command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 the run failed, 2 bad input, 130 Ctrl-C).

    Every failure is one line on stderr; ``--debug`` shows the traceback instead.
    """
    try:  # a Ctrl-C while the parser and its imports load is one line, exit 130, too
        parser = build_parser()
        args, unknown = parser.parse_known_args(argv)
    except KeyboardInterrupt:
        print("spikebridge: interrupted", file=sys.stderr)
        return 130
    if not getattr(args, "func", None):
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        parser.print_help()
        return 2
    if unknown:  # named by the subcommand, whose --help lists what it takes
        print(f"spikebridge {args.command}: error: unrecognized arguments: {' '.join(unknown)} "
              f"(see `spikebridge {args.command} --help`)", file=sys.stderr)
        return 2
    debug = getattr(args, "debug", False)
    previous = warnings.showwarning
    if not debug:
        warnings.showwarning = one_line_warnings(args.command)
    try:
        from ..memory_reuse import retain_freed_memory

        # batch after batch reuses the same large buffers without page faults (memory_reuse);
        # SPIKEBRIDGE_RETAIN_FREED_MEMORY=0 turns it off
        retain_freed_memory()
        if getattr(args, "follow_links", False):  # read by the image-folder walk
            from ..data.imagefolder import FOLLOW_LINKS_ENV

            os.environ[FOLLOW_LINKS_ENV] = "1"
        return args.func(args)
    except KeyboardInterrupt:
        print(f"spikebridge {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` & co.: not a failure of ours
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python would flush it at exit
        return 0
    except Exception as exc:
        if debug:
            raise
        code, message = describe_failure(exc)
        print(f"spikebridge {args.command}: error: {message}", file=sys.stderr)
        return code
    finally:
        warnings.showwarning = previous
