"""The ``spikebridge`` command: train | evaluate | compare | analyse | demo.

Every subcommand has ``--help``; long work shows progress bars (``--quiet`` hides them).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import NoReturn

__all__ = ["main"]

DESCRIPTION = """\
spikebridge: turn trained ANNs into spiking neural networks (SNNs) that keep the ANN's
accuracy at very few time-steps.

  spikebridge demo                     QCFS vs COS on the shipped Fashion-MNIST model
  spikebridge train --out runs/m1      train a QCFS ANN (writes model.safetensors + config.json)
  spikebridge evaluate --model runs/m1 --method cos --rho 4 --T 1,2,4,8
  spikebridge compare --methods qcfs,cos --T 1,2,4,8,16,32
  spikebridge analyse --iterations 0,1,2,4     offset-spike statistics (COS paper Fig. 1/3, Table 3)
  spikebridge train --recipe cifar100-vgg16 --out runs/c100    a COS paper row (docs/reproduce.md)
  spikebridge reproduce --recipe cifar100-vgg16 --model runs/c100   ours vs the paper, per T

Run `spikebridge COMMAND --help` for the options of each command.
"""


def _method_names() -> list[str]:
    from .methods import list_methods

    return list_methods()


def _integers_at_least(minimum: int, maximum: int | None = None, what: str = "value"):
    """An argparse type: comma-separated integers in ``[minimum, maximum]`` (``--T 1,2,4``)."""
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers, got {text!r}") from exc
        if not values:
            raise argparse.ArgumentTypeError("expected at least one integer")
        if min(values) < minimum:
            raise argparse.ArgumentTypeError(
                f"every value must be >= {minimum}, got {min(values)}")
        if maximum is not None and max(values) > maximum:
            raise argparse.ArgumentTypeError(
                f"{max(values)} is above spikebridge's bound of {maximum:,} on the {what} "
                "(docs/reliability.md, \"Sizes\")")
        return values

    return parse


def _bounds():
    from .limits import MAX_BATCH, MAX_ITERATIONS, MAX_STEPS

    return MAX_STEPS, MAX_ITERATIONS, MAX_BATCH


_MAX_STEPS, _MAX_ITERATIONS, _MAX_BATCH = _bounds()
_int_list = _integers_at_least(1, _MAX_STEPS, "number of time-steps T")  # time-steps T
_count_list = _integers_at_least(0, _MAX_ITERATIONS, "COS iterations")  # COS iteration counts


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``spikebridge CMD: error: ...``), exit code 2."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - argparse's signature
        kwargs.setdefault("allow_abbrev", False)  # `--mode` must not silently mean `--model`
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _device(text: str) -> str:
    """``--device``: validated before any work (a malformed name or absent hardware)."""
    from .devices import DeviceError, resolve_device

    try:
        return str(resolve_device(text))
    except DeviceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _int_at_least(minimum: int, maximum: int | None = None, what: str = "value"):
    """An argparse type: one integer in ``[minimum, maximum]``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(
                f"{value} is above spikebridge's bound of {maximum:,} on the {what} "
                "(docs/reliability.md, \"Sizes\")")
        return value

    return parse


_positive_int = _int_at_least(1)
_steps = _int_at_least(1, _MAX_STEPS, "number of time-steps")  # one T or ρ
_batch = _int_at_least(1, _MAX_BATCH, "batch size")
_iterations = _int_at_least(0, _MAX_ITERATIONS, "COS iterations")


def _add_follow_links(p: argparse.ArgumentParser) -> None:
    p.add_argument("--follow-links", action="store_true",
                   help="follow symbolic links to directories in ImageNet / image-folder "
                   "trees (each directory read once: loops are detected); off by default")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--device", default="cpu", type=_device,
                        help="torch device, e.g. cpu, cuda or cuda:1 (default cpu); checked "
                        "before any work")
    parser.add_argument("--debug", action="store_true",
                        help="on failure, show the full Python traceback instead of one line")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train an ANN with a spiking-friendly activation (QCFS by default)",
        description="Train an ANN (SGD + momentum, cosine schedule, weight decay) and write a "
        "checkpoint directory: model.safetensors + config.json + train_state.pt (for --resume), "
        "signed by manifest.json (SHA-256 of each) and committed as one atomic snapshot after "
        "every epoch (docs/reliability.md). An existing checkpoint is only continued "
        "(--resume) or replaced (--overwrite); the directory is locked while training runs.",
    )
    p.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    p.add_argument("--recipe", default=None,
                   help="train as a row of the COS paper (e.g. cifar100-vgg16; `spikebridge "
                   "info` lists them, docs/reproduce.md): architecture, dataset, L, epochs, lr, "
                   "weight decay, batch size and augmentation from the recipe; any option given "
                   "explicitly here (e.g. --epochs 1 --train-subset 256) overrides it")
    p.add_argument("--model", default=None, help="architecture (default fashion_cnn; "
                   "see `spikebridge info`)")
    p.add_argument("--dataset", default=None,
                   help="fashion-mnist (default), mnist, digits, cifar10, cifar100, "
                   "cifar100-coarse (`spikebridge info`; docs/data.md)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="directory with the data set's files: IDX for MNIST-style sets, the CIFAR "
                   "release, ImageNet / image-folder trees (default: $SPIKEBRIDGE_DATA_DIR, or "
                   "the Debian package's Fashion-MNIST)")
    _add_follow_links(p)
    p.add_argument("--activation", default=None,
                   help="qcfs:L=4,theta=2 (default) | relu | clipped_relu:theta=2 | "
                   "slip:L=4,c=0.5,theta=2[,delta1=0,delta2=0.5,learn_c=1] | strelu:theta=2 "
                   "(a reconstruction, docs/methods.md §6) | "
                   "leaky_threshold:theta=2,alpha=0.1,neg_theta=0.5")
    p.add_argument("--epochs", type=int, default=None, help="default 10")
    p.add_argument("--batch-size", type=_batch, default=None, help="default 128")
    p.add_argument("--lr", type=float, default=None, help="default 0.1")
    p.add_argument("--momentum", type=float, default=None, help="default 0.9")
    p.add_argument("--weight-decay", type=float, default=None, help="default 5e-4")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true",
                   help="no augmentation at all (random crop / flip, AutoAugment, Cutout)")
    p.add_argument("--autoaugment", action=argparse.BooleanOptionalAction, default=None,
                   help="AutoAugment, CIFAR-10 policy (default off)")
    p.add_argument("--cutout", type=int, default=None,
                   help="Cutout square side in pixels (default 0 = off; CIFAR recipes 16 / 8)")
    p.add_argument("--crop-padding", type=int, default=None,
                   help="zero padding of the random crop (default: the dataset's, "
                   "`spikebridge info`: 2, or 4 for CIFAR)")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    p.add_argument("--train-subset", type=int, default=None,
                   help="train on the first N samples of a fixed shuffle (quick runs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    p.add_argument("--no-channels-last", action="store_true",
                   help="keep NCHW memory format (channels_last is faster on CPU)")
    p.add_argument("--resume", action="store_true", help="continue from the last finished epoch")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoint already in --out (kept until the first new "
                   "epoch is committed)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="with --resume: accept a checkpoint without (matching) SHA-256 hashes "
                   "(also: SPIKEBRIDGE_ALLOW_UNVERIFIED=1)")
    p.add_argument("--image-size", type=_positive_int, default=None,
                   help="streamed datasets (imagenet, imagefolder): side of the square training "
                   "crop and evaluation image (default 224)")
    p.add_argument("--amp", choices=("bf16",), default=None,
                   help="mixed precision: bfloat16 autocast for forward and loss (weights and "
                   "optimizer stay float32; default off)")
    _add_process_options(p)
    _add_common(p)
    p.set_defaults(func=_cmd_train)


def _add_process_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("processes (docs/distributed.md)")
    g.add_argument("--nproc", type=int, default=1,
                   help="run in N local processes with torch.distributed (DDP training; "
                   "evaluation shares the test set); torchrun --nproc_per_node N -m spikebridge "
                   "... does the same. With --device cuda each process takes one GPU")
    g.add_argument("--workers", type=int, default=0,
                   help="image-decoding processes per process for streamed datasets (imagenet, "
                   "imagefolder; default 0)")


def _multi_process(command):
    """Run ``command(args)`` in every process of the run: start ``--nproc`` processes here, or
    join the ones torchrun started; each gets its own device and only rank 0 prints."""
    import functools

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from . import distributed

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
            warnings.showwarning = _one_line_warnings(args.command)
        if launched is not None and nproc not in (1, launched):
            raise distributed.DistributedError(
                f"--nproc {nproc} inside a run of {launched} processes (torchrun): give one of "
                "the two")
        with distributed.process_group(args.device) as device:
            args.device = str(device)
            args.quiet = args.quiet or not distributed.is_main_process()
            return command(args)

    return run


def _is_main_process() -> bool:
    """Whether this process writes the results (rank 0, or the only process)."""
    from .distributed import is_main_process

    return is_main_process()


@_multi_process
def _cmd_train(args: argparse.Namespace) -> int:
    from .activations import ActivationSpec
    from .train import TrainConfig, train

    # options a recipe sets: given explicitly they override it; absent, the defaults apply
    chosen = {key: getattr(args, option) for option, key in _RECIPE_OPTIONS.items()
              if getattr(args, option) is not None}
    if "activation" in chosen:
        chosen["activation"] = ActivationSpec.parse(chosen["activation"])
    if args.no_augment:
        given = [flag for flag, key in (("--autoaugment", "autoaugment"), ("--cutout", "cutout"),
                                        ("--crop-padding", "crop_padding"))
                 if chosen.get(key)]
        if given or args.no_flip:
            raise ValueError(f"{', '.join(given + ['--no-flip'] * args.no_flip)} set(s) "
                             "augmentation, which --no-augment turns off; drop one of them")
        chosen.update(augment=False, autoaugment=False, cutout=0)
    if args.no_flip:
        chosen["horizontal_flip"] = False
    common = dict(seed=args.seed, train_subset=args.train_subset,
                  channels_last=not args.no_channels_last, compile=args.compile, amp=args.amp,
                  image_size=args.image_size)
    if args.recipe is not None:
        from .recipes import load_recipe

        cfg = load_recipe(args.recipe).train_config(**common, **chosen)
    else:
        cfg = TrainConfig(**{"architecture": "fashion_cnn", "dataset": "fashion-mnist",
                             **common, **chosen})
    command = "spikebridge " + shlex.join(sys.argv[1:]) if sys.argv[1:] else None
    config = train(cfg, args.out, data_dir=args.data_dir, resume=args.resume,
                   overwrite=args.overwrite, allow_unverified=args.allow_unverified or None,
                   progress=not args.quiet, command=command, device=args.device,
                   workers=args.workers)
    print(f"wrote {args.out} (test accuracy {config['test_accuracy']:.2%})")
    return 0


#: train options a recipe sets -> TrainConfig field (None when not given on the command line)
_RECIPE_OPTIONS = {
    "model": "architecture", "dataset": "dataset", "activation": "activation",
    "epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "momentum": "momentum",
    "weight_decay": "weight_decay", "autoaugment": "autoaugment", "cutout": "cutout",
    "crop_padding": "crop_padding",
}


def _add_model_and_data(p: argparse.ArgumentParser, *, conversion: bool = True) -> None:
    """Options of commands that load a checkpoint and its test set; ``conversion``: also the
    options of commands that convert with a chosen method (execution mode, calibration data,
    weight bits)."""
    p.add_argument("--model", default=None,
                   help="checkpoint directory from `spikebridge train`, or per method / per "
                   "activation kind: relu=DIR1,qcfs=DIR2,cos=DIR3 (default: the shipped model "
                   "of the kind each method needs)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="directory with the dataset's files (default: the Debian package's)")
    _add_follow_links(p)
    p.add_argument("--limit", type=_positive_int, default=None,
                   help="evaluate on a fixed random subset of N test images (default: all; "
                   "analyse: 1000)")
    p.add_argument("--batch-size", type=_batch, default=250)
    p.add_argument("--allow-unverified", action="store_true",
                   help="load checkpoints without (or failing) the SHA-256 manifest check "
                   "(docs/reliability.md); also SPIKEBRIDGE_ALLOW_UNVERIFIED=1")
    p.add_argument("--ignore-data-mismatch", action="store_true",
                   help="evaluate even if the test images differ from those the checkpoint "
                   "was evaluated on when it was trained (its recorded test_fingerprint), e.g. "
                   "a deliberately different copy or subset of the dataset")
    if not conversion:
        return
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="test images holding NaN/inf get NaN outputs and count as wrong, instead "
                   "of stopping with an error (the default)")
    p.add_argument("--mode", choices=("auto", "step", "layer", "hybrid"), default="auto",
                   help="execution: step-by-step, layer-wise, or hybrid (COS: first ρ frames "
                   "layer-wise, then step by step); auto picks the fastest the method allows")
    p.add_argument("--calibration-samples", type=_positive_int, default=None,
                   help="training images that data-based methods (maxnorm, robustnorm, "
                   "threshold-balancing, rmp, opi, ecc) measure their statistics on "
                   f"(default {DEFAULT_CALIBRATION_SAMPLES}); refused for other methods")
    p.add_argument("--weight-bits", type=int, default=None,
                   help="quantize every conv/linear weight to b-bit signed integers (2..16) "
                   "after conversion (docs/methods.md §7.6); works with every method")
    p.add_argument("--weight-rounding", choices=("nearest", "trunc", "ecc"), default="nearest",
                   help="with --weight-bits: round to nearest (default), truncate, or ECC's own "
                   "grid (2^(b-1) levels, truncated; docs/methods.md §7.6)")


COS_DEFAULTS = {"rho": 4, "iterations": 1, "variant": "shift", "epsilon": 1e-3}
DEFAULT_CALIBRATION_SAMPLES = 1000


def _add_cos_options(p: argparse.ArgumentParser) -> None:
    """COS flags; default None so that a flag given for a method without COS is refused."""
    g = p.add_argument_group("COS options (docs/methods.md §4; refused for other methods)")
    g.add_argument("--rho", type=_steps, default=None,
                   help="pre-simulation steps ρ (default 4)")
    g.add_argument("--iterations", type=_iterations, default=None,
                   help="±1-spike corrections per neuron (default 1; 0 = plain QCFS; the "
                   "lightweight variant has exactly one)")
    g.add_argument("--variant", choices=("shift", "lightweight"), default=None,
                   help="shift (default; Theorems 1-2) or lightweight (start from v(ρ))")
    g.add_argument("--epsilon", type=float, default=None,
                   help="ε as a fraction of θ (default 0.001; shift variant only)")


def _add_energy_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("operation and energy counting (docs/energy.md)")
    g.add_argument("--no-energy", action="store_true",
                   help="do not count spikes, synaptic operations and energy (slightly faster)")
    g.add_argument("--mac-pj", type=float, default=None,
                   help="energy of one MAC in pJ (default 4.6: 32-bit float, 45 nm, Horowitz 2014)")
    g.add_argument("--ac-pj", type=float, default=None,
                   help="energy of one synaptic accumulate in pJ (default 0.9, same source)")
    g.add_argument("--first-layer", choices=("once", "every_step"), default=None,
                   help="charge the analog first layer once per image (the simulator caches it; "
                   "default) or at every presented step (hardware re-presenting the image)")


_ENERGY_FLAGS = {"mac_pj": "--mac-pj", "ac_pj": "--ac-pj", "first_layer": "--first-layer"}


def _energy_model(args: argparse.Namespace):
    from .energy import EnergyModel

    given = [flag for key, flag in _ENERGY_FLAGS.items() if getattr(args, key, None) is not None]
    if given and getattr(args, "no_energy", False):
        raise ValueError(f"{', '.join(given)} set(s) the energy model, which --no-energy turns "
                         "off; drop one of them")
    mac_pj = 4.6 if getattr(args, "mac_pj", None) is None else args.mac_pj
    ac_pj = 0.9 if getattr(args, "ac_pj", None) is None else args.ac_pj
    return EnergyModel(mac_pj=mac_pj, ac_pj=ac_pj,
                       first_layer=getattr(args, "first_layer", None) or "once")


def _print_energy(records: list[dict]) -> None:
    from .energy import format_energy_table

    table = format_energy_table(records)
    if table:
        print("\n" + table)


_METHODS_HELP = (
    "conversion method, optionally with parameters as name:key=value[:key=value] "
    "(e.g. rmp:scale=0.9, ecc:tre=0:cmb=0). Methods: {}. `spikebridge info` describes them; "
    "docs/methods.md has every equation."
)


def _method_specs(text: str, args: argparse.Namespace) -> list:
    """Parse ``--method(s)``; COS takes its defaults from the --rho/--iterations/... flags.

    Flags that no chosen method uses are refused rather than ignored: a COS flag without a COS
    method, ``--epsilon`` with the lightweight variant (it computes no shift), and
    ``--calibration-samples`` without a data-based method.
    """
    from .methods import MethodSpec, get_method, parse_method_spec

    specs = [parse_method_spec(item) for item in text.split(",") if item.strip()]
    if not specs:
        raise ValueError("name at least one conversion method")
    given = {key: getattr(args, key, None) for key in COS_DEFAULTS}
    given = {key: value for key, value in given.items() if value is not None}
    if given and not any(spec.name == "cos" for spec in specs):
        flags = ", ".join("--" + key for key in given)
        raise ValueError(f"{flags} only appl{'ies' if len(given) == 1 else 'y'} to method cos, "
                         "not to "
                         f"{', '.join(spec.label for spec in specs)}")
    result = []
    for spec in specs:
        if spec.name == "cos":
            params = {**COS_DEFAULTS, **given, **spec.params}
            if params["variant"] == "lightweight" and (
                    "epsilon" in given or "epsilon" in spec.params):
                raise ValueError("--epsilon does not apply to the lightweight COS variant (it "
                                 "starts from v(ρ) and computes no shift); drop it or use "
                                 "--variant shift")
            if params["variant"] == "lightweight":
                params.pop("epsilon")
            spec = MethodSpec("cos", params)
        result.append(spec)
    methods = [get_method(spec.name, **spec.params) for spec in result]  # checks parameters
    _energy_model(args)  # refuses energy flags that --no-energy makes void
    samples = getattr(args, "calibration_samples", None)
    if samples is not None and not any(method.needs_calibration_data() for method in methods):
        raise ValueError("--calibration-samples only applies to data-based methods (maxnorm, "
                         "robustnorm, threshold-balancing, rmp, opi, ecc); "
                         f"{', '.join(spec.label for spec in result)} use(s) no data")
    return result


def _model_choices(text: str | None) -> tuple[Path | None, dict[str, Path]]:
    """``--model``: one directory for every method, and/or ``key=DIR`` pairs (method or kind)."""
    default: Path | None = None
    by_key: dict[str, Path] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if sep:
            by_key[key.strip().lower()] = Path(value.strip())
        elif default is None:
            default = Path(item)
        else:
            raise ValueError(f"--model names two default directories ({default}, {item}); use "
                             "key=DIR pairs (relu=DIR1,qcfs=DIR2) for several models")
    return default, by_key


def _shipped_model_for(kinds: tuple[str, ...]) -> Path | None:
    """A model shipped in the package whose activation kind one of ``kinds`` is."""
    from .checkpoint import CheckpointError, load_config
    from .shipped import SHIPPED_MODEL_DIR, SHIPPED_WEIGHTS_ROOT

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


def _resolve_model(spec, args: argparse.Namespace) -> Path:
    """The checkpoint directory a method runs on (see --model)."""
    from .methods import METHODS

    default, by_key = _model_choices(args.model)
    method = METHODS[spec.name]
    if spec.name in by_key:
        return by_key[spec.name]
    for kind in method.source_kinds:
        if kind in by_key:
            return by_key[kind]
    if default is not None:
        return default
    shipped = _shipped_model_for(method.source_kinds)
    if shipped is None:
        raise ValueError(
            f"no model given for method {spec.name!r} and none of the kind it needs "
            f"({' / '.join(method.source_kinds)}) is shipped: train one with "
            f"`{method.source_hint}` and pass --model {spec.name}=DIR"
        )
    return shipped


def _load(args: argparse.Namespace, model_dir: Path | None = None):
    """(ANN, config, test loader, model label) for a checkpoint and --data-dir / --limit."""
    from .checkpoint import load_checkpoint
    from .shipped import SHIPPED_MODEL_DIR

    if model_dir is None:
        default, by_key = _model_choices(args.model)
        if by_key:
            raise ValueError("this command takes one --model directory, not key=DIR pairs")
        model_dir = default
    model_dir = model_dir or SHIPPED_MODEL_DIR
    ann, config = load_checkpoint(model_dir, device=args.device,
                                  allow_unverified=getattr(args, "allow_unverified", False) or None)
    loader, label = _test_loader(args, config, model_dir)
    return ann, config, loader, label


def _test_loader(args: argparse.Namespace, config: dict, source: Path):
    """(test loader, label) for the data a checkpoint's (or saved SNN's) config names."""
    from .data.pipeline import evaluation_loader, open_checkpoint_split
    from .input_checks import check_test_set

    if not isinstance(config.get("dataset"), str):
        raise ValueError(f"{source}/config.json names no dataset (field 'dataset'), so there "
                         "is no test set to evaluate it on; add it (e.g. \"dataset\": "
                         "\"fashion-mnist\") and re-sign the checkpoint")
    full = open_checkpoint_split(config, "test", args.data_dir)
    check_test_set(full, config, source, ignore=getattr(args, "ignore_data_mismatch", False))
    test = full.subset(args.limit, seed=0)
    label = f"{config['architecture']} ({Path(source).name})"
    loader = evaluation_loader(test, args.batch_size, workers=getattr(args, "workers", 0))
    return loader, label


def _calibration_data(args: argparse.Namespace, config: dict):
    """Training images of the model's data set for data-based methods (fixed subset)."""
    from .calibration import CalibrationData
    from .data.pipeline import evaluation_loader, open_checkpoint_split

    samples = args.calibration_samples or DEFAULT_CALIBRATION_SAMPLES
    train = open_checkpoint_split(config, "train", args.data_dir)
    subset = train.subset(min(samples, len(train)), seed=0)
    # every process calibrates on the same images (identical networks), not on a share
    loader = evaluation_loader(subset, args.batch_size, workers=getattr(args, "workers", 0),
                               shard=False)
    return CalibrationData(loader, len(subset), progress=not args.quiet)


def _estimate_seconds(args: argparse.Namespace, snn, x, images: int, steps: list[int],
                      nonfinite: str) -> float:
    """Seconds a short probe on batch ``x`` predicts for simulating ``images`` (0 outside the
    main process: every process runs its share in the same time)."""
    from .runtime_estimate import estimate_simulation_seconds

    if not _is_main_process() or x is None:
        return 0.0
    snn.to(args.device).eval()
    return estimate_simulation_seconds(snn, x.to(args.device), steps, images, mode=args.mode,
                                       nonfinite=nonfinite)


def _announce_long_command(args: argparse.Namespace, estimates: list[tuple[str, float]],
                           images: int, steps: list[int]) -> None:
    """One stderr line when the whole command — every method together — is estimated to take
    longer than LONG_RUN_SECONDS (a run of many methods can be long although each is short)."""
    from .distributed import world_size
    from .runtime_estimate import LONG_RUN_SECONDS, format_duration

    total = sum(seconds for _, seconds in estimates)
    if not _is_main_process() or total <= LONG_RUN_SECONDS:
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


def _warn_if_long(args: argparse.Namespace, snn, x, images: int, steps: list[int], label: str,
                  nonfinite: str) -> None:
    """One stderr line when a short probe predicts a simulation longer than LONG_RUN_SECONDS."""
    _announce_long_command(args, [(label, _estimate_seconds(args, snn, x, images, steps,
                                                             nonfinite))], images, steps)


def _check_weight_options(args: argparse.Namespace) -> None:
    if args.weight_bits is not None:
        from .quantization import check_bits

        check_bits(args.weight_bits)
    elif getattr(args, "weight_rounding", "nearest") != "nearest":
        raise ValueError("--weight-rounding only applies with --weight-bits")


def _run_methods(args: argparse.Namespace, specs: list, steps: list[int]):
    import torch

    from .convert import convert
    from .evaluation import evaluate
    from .methods import get_method
    from .reporting import evaluation_record
    from .simulate import resolve_mode

    _check_weight_options(args)
    loaded: dict[Path, tuple] = {}
    probe_batches: dict[Path, torch.Tensor] = {}  # one per model: no second loader start-up
    ann_accuracy: dict[Path, float | None] = {}
    records = []
    nonfinite = "propagate" if args.allow_nonfinite else "error"
    prepared, estimates = [], []
    for spec in specs:  # convert every method first: the long-run notice covers the command
        method = get_method(spec.name, **spec.params)
        model_dir = _resolve_model(spec, args)
        if model_dir not in loaded:
            loaded[model_dir] = _load(args, model_dir)
        ann, config, loader, label = loaded[model_dir]
        calibration = _calibration_data(args, config) if method.needs_calibration_data() else None
        snn = convert(ann, method, calibration_data=calibration, weight_bits=args.weight_bits,
                      weight_rounding=getattr(args, "weight_rounding", "nearest"),
                      progress=not args.quiet)
        if model_dir not in probe_batches and _is_main_process():
            probe_batches[model_dir] = next(iter(loader))[0]
        estimates.append((spec.label, _estimate_seconds(
            args, snn, probe_batches.get(model_dir), len(loader.dataset), steps, nonfinite)))
        prepared.append((spec, model_dir, snn, calibration))
    images = max(len(loaded[m][2].dataset) for _, m, _, _ in prepared)
    _announce_long_command(args, estimates, images, steps)
    for spec, model_dir, snn, calibration in prepared:
        ann, config, loader, label = loaded[model_dir]
        result = evaluate(snn, loader, steps, ann=ann if model_dir not in ann_accuracy else None,
                          mode=args.mode, device=args.device, progress=not args.quiet,
                          description=f"{spec.label}: simulating T={max(steps)}",
                          count_operations=not getattr(args, "no_energy", False),
                          energy=_energy_model(args), nonfinite=nonfinite)
        if model_dir not in ann_accuracy:
            ann_accuracy[model_dir] = result.ann_accuracy
        extra = {"label": spec.label,
                 "mode": resolve_mode(snn, args.mode, torch.device(args.device)),
                 "device": str(args.device), "weight_bits": args.weight_bits,
                 "calibration_samples": (None if calibration is None else calibration.samples)}
        record = evaluation_record(result, snn, steps, dataset=config["dataset"], model=label,
                                   extra=extra)
        record["ann_accuracy"] = ann_accuracy[model_dir]
        records.append(record)
    return records


def _refuse_with_snn(args: argparse.Namespace, method_flag: str) -> None:
    """With --snn the method, its parameters and the weights are the saved SNN's: options that
    would choose them are refused, not ignored."""
    given = [flag for flag, value in (
        ("--model", args.model), (method_flag, getattr(args, method_flag[2:], None)),
        ("--weight-bits", args.weight_bits), ("--calibration-samples", args.calibration_samples),
        ("--weight-rounding", None if getattr(args, "weight_rounding", "nearest") == "nearest"
         else args.weight_rounding),
        *((f"--{key}", getattr(args, key, None)) for key in COS_DEFAULTS),
    ) if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)} do(es) not apply with --snn: a saved SNN was "
                         "converted with its method, parameters and weights once and for all "
                         "(`spikebridge convert`)")


def _run_snns(args: argparse.Namespace, directories: list[Path], steps: list[int]):
    """Evaluate saved SNNs (``--snn``): no ANN, no conversion, no calibration data."""
    import torch

    from .evaluation import evaluate
    from .methods import MethodSpec
    from .reporting import evaluation_record
    from .simulate import resolve_mode
    from .snn_artefact import load_snn

    records = []
    for directory in directories:
        snn = load_snn(directory, device=args.device,
                       allow_unverified=getattr(args, "allow_unverified", False) or None)
        config = snn.config
        loader, label = _test_loader(args, config, directory)
        spec = MethodSpec(config["snn"]["method"], config["snn"]["params"])
        nonfinite = "propagate" if args.allow_nonfinite else "error"
        if _is_main_process():
            _warn_if_long(args, snn, next(iter(loader))[0], len(loader.dataset), steps,
                          spec.label, nonfinite)
        result = evaluate(snn, loader, steps, mode=args.mode, device=args.device,
                          progress=not args.quiet,
                          description=f"{spec.label}: simulating T={max(steps)}",
                          count_operations=not getattr(args, "no_energy", False),
                          energy=_energy_model(args), nonfinite=nonfinite)
        conversion = config["snn"].get("conversion", {})
        extra = {"label": spec.label, "snn": str(directory),
                 "mode": resolve_mode(snn, args.mode, torch.device(args.device)),
                 "device": str(args.device), "weight_bits": snn.weight_bits,
                 "calibration_samples": conversion.get("calibration_samples")}
        record = evaluation_record(result, snn, steps, dataset=config["dataset"], model=label,
                                   extra=extra)
        record["ann_accuracy"] = None
        records.append(record)
    return records


def _snn_directories(text: str) -> list[Path]:
    return [Path(item) for item in text.split(",") if item.strip()]


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="convert a trained ANN once and save the SNN (for evaluate --snn)",
        description="Convert a checkpoint with one method — BatchNorm folded, data-based "
        "statistics measured, weights quantized — and save the SNN as a hashed directory "
        "(docs/export.md). `evaluate --snn DIR` then simulates it without the ANN or any "
        "calibration pass; spikebridge.load_snn(DIR) loads it in Python.",
    )
    p.add_argument("--model", default=None, help="checkpoint directory from `spikebridge "
                   "train` (default: the shipped model of the kind the method needs)")
    p.add_argument("--method", default="qcfs", help="one " + _METHODS_HELP.format(
        ", ".join(_method_names())) + " Default qcfs.")
    p.add_argument("--out", type=Path, required=True, help="directory to write the SNN to")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an SNN already in --out (atomically)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="directory with the dataset's files (data-based methods read training "
                   "images from it)")
    p.add_argument("--calibration-samples", type=_positive_int, default=None,
                   help="training images that data-based methods measure their statistics on "
                   f"(default {DEFAULT_CALIBRATION_SAMPLES}); refused for other methods")
    p.add_argument("--weight-bits", type=int, default=None,
                   help="quantize every conv/linear weight to b-bit signed integers (2..16)")
    p.add_argument("--weight-rounding", choices=("nearest", "trunc", "ecc"), default="nearest",
                   help="with --weight-bits: nearest (default), trunc, or ECC's own grid")
    p.add_argument("--batch-size", type=_batch, default=250)
    p.add_argument("--allow-unverified", action="store_true",
                   help="convert a checkpoint without (or failing) the SHA-256 manifest check")
    _add_cos_options(p)
    _add_common(p)
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args: argparse.Namespace) -> int:
    from .checkpoint import check_output_dir, load_checkpoint
    from .convert import convert
    from .methods import get_method
    from .snn_artefact import save_snn

    (spec,) = _one_method(args)
    check_output_dir(args.out)
    if not args.overwrite and any(
            os.path.lexists(args.out / name) for name in ("current", "config.json")):
        raise ValueError(f"{args.out} already holds an SNN or checkpoint; pass --overwrite to "
                         "replace it (atomically) or choose another --out")
    _check_weight_options(args)
    model_dir = _resolve_model(spec, args)
    ann, config = load_checkpoint(model_dir, device=args.device,
                                  allow_unverified=args.allow_unverified or None)
    method = get_method(spec.name, **spec.params)
    calibration = _calibration_data(args, config) if method.needs_calibration_data() else None
    snn = convert(ann, method, calibration_data=calibration, weight_bits=args.weight_bits,
                  weight_rounding=args.weight_rounding, progress=not args.quiet)
    save_snn(snn.cpu(), args.out, ann_config=config, source=model_dir, overwrite=args.overwrite,
             conversion={"calibration_samples": None if calibration is None
                         else calibration.samples, "label": spec.label})
    print(f"wrote {args.out} ({spec.label} SNN of {model_dir}; evaluate it with "
          f"`spikebridge evaluate --snn {args.out}`)")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a saved SNN to NIR, for other simulators and chips",
        description="Write a saved SNN (`spikebridge convert --out DIR`) as a NIR graph "
        "(HDF5). Every neuron keeps its exact semantics: hard reset as nir.IF with the "
        "threshold one float32 step lower (NIR fires on v > θ, we on v ≥ θ), reset by "
        "subtraction as an integrator + threshold + Scale(-θ) sub-graph with a recurrent edge, "
        "initial potentials in the neuron's metadata. COS, signed neurons and ECC's "
        "residual-elimination current are refused (docs/export.md says why).",
    )
    p.add_argument("--snn", type=Path, required=True, help="directory written by "
                   "`spikebridge convert`")
    p.add_argument("--format", choices=("nir",), default="nir")
    p.add_argument("--out", type=Path, required=True, help="file to write (e.g. model.nir)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="export an SNN directory without (or failing) its SHA-256 manifest check")
    _add_common(p)
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from .checkpoint import check_output_file
    from .nir_export import write_nir
    from .snn_artefact import load_snn

    check_output_file(args.out)
    snn = load_snn(args.snn, allow_unverified=args.allow_unverified or None)
    write_nir(snn, args.out)
    print(f"wrote {args.out} (NIR graph of the {snn.method.name} SNN in {args.snn}; "
          "load it with spikebridge.load_nir or any NIR importer, docs/export.md)")
    return 0


def _one_method(args: argparse.Namespace) -> list:
    specs = _method_specs(args.method, args)
    if len(specs) != 1:
        raise ValueError("convert takes one --method")
    return specs


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="convert a trained ANN and measure the SNN's accuracy at every T",
        description="Convert a checkpoint with one method, simulate the test set once for "
        "max(T) steps and report the accuracy at each requested T (running mean of the output "
        "layer) next to the ANN's.",
    )
    _add_model_and_data(p)
    p.add_argument("--method", default=None, help="one " + _METHODS_HELP.format(
        ", ".join(_method_names())) + " Default qcfs.")
    p.add_argument("--snn", default=None, metavar="DIR",
                   help="evaluate an SNN saved by `spikebridge convert` instead of converting "
                   "--model (no ANN, no calibration pass)")
    p.add_argument("--T", type=_int_list, default=[1, 2, 4, 8, 16, 32],
                   help="comma-separated time-steps (default 1,2,4,8,16,32)")
    p.add_argument("--json", type=Path, default=None, help="write the result record here")
    _add_cos_options(p)
    _add_energy_options(p)
    _add_process_options(p)
    _add_common(p)
    p.set_defaults(func=_cmd_evaluate)


@_multi_process
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .checkpoint import check_output_file
    from .reporting import format_accuracy_table, write_json

    if args.snn is not None:
        _refuse_with_snn(args, "--method")
        directories = _snn_directories(args.snn)
        if len(directories) != 1:
            raise ValueError("evaluate takes one --snn directory; use `spikebridge compare "
                             "--snn D1,D2` for several")
    else:
        specs = _method_specs(args.method or "qcfs", args)
        if len(specs) != 1:
            raise ValueError("evaluate takes one --method; use `spikebridge compare --methods` "
                             "for several")
    if args.json is not None:
        check_output_file(args.json)
    records = (_run_snns(args, directories, args.T) if args.snn is not None
               else _run_methods(args, specs, args.T))
    print(format_accuracy_table(records))
    _print_energy(records)
    if args.json and _is_main_process():
        write_json(args.json, records[0])
        print(f"wrote {args.json}")
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="several methods side by side: table, JSON, CSV and a PNG plot",
        description="Evaluate several conversion methods on the same model and test images.",
    )
    _add_model_and_data(p)
    p.add_argument("--methods", default=None, help="comma-separated; each a "
                   + _METHODS_HELP.format(", ".join(_method_names())) + " Default qcfs,cos.")
    p.add_argument("--snn", default=None, metavar="D1[,D2...]",
                   help="compare SNNs saved by `spikebridge convert` instead of converting "
                   "--model")
    p.add_argument("--T", type=_int_list, default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--out", type=Path, default=Path("out/compare"),
                   help="directory for results.json, results.csv, accuracy_vs_T.png and "
                   "accuracy_vs_energy.png")
    _add_cos_options(p)
    _add_energy_options(p)
    _add_process_options(p)
    _add_common(p)
    p.set_defaults(func=_cmd_compare)


def _write_comparison(records: list[dict], out: Path) -> None:
    from .reporting import plot_accuracy, write_csv, write_json

    write_json(out / "results.json", {"results": records})
    write_csv(out / "results.csv", records)
    plot_accuracy(records, out / "accuracy_vs_T.png")
    print(f"wrote {out / 'results.json'}, {out / 'results.csv'}, {out / 'accuracy_vs_T.png'}")
    if any(rec.get("ops") for rec in records):
        from .energy import plot_accuracy_vs_energy

        print(f"wrote {plot_accuracy_vs_energy(records, out / 'accuracy_vs_energy.png')}")


@_multi_process
def _cmd_compare(args: argparse.Namespace) -> int:
    from .checkpoint import check_output_dir
    from .reporting import format_accuracy_table

    if args.snn is not None:
        _refuse_with_snn(args, "--methods")
        check_output_dir(args.out)
        records = _run_snns(args, _snn_directories(args.snn), args.T)
    else:
        specs = _method_specs(args.methods or "qcfs,cos", args)
        check_output_dir(args.out)
        records = _run_methods(args, specs, args.T)
    print(format_accuracy_table(records))
    _print_energy(records)
    if _is_main_process():
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
    _add_model_and_data(p, conversion=False)
    p.set_defaults(limit=1000)
    p.add_argument("--T", type=_steps, default=None,
                   help="time-steps (default: the model's QCFS levels L, the paper's setting; a "
                   "T that is not a multiple of L makes the desired spike count fractional)")
    p.add_argument("--rho", type=_steps, default=None,
                   help="pre-simulation steps ρ of the COS runs (default 4)")
    p.add_argument("--snn", type=Path, default=None, metavar="DIR",
                   help="analyse an SNN saved by `spikebridge convert` against the ANN it was "
                   "converted from (recorded in it; or --model), instead of 0, 1, 2, … "
                   "iterations")
    p.add_argument("--iterations", type=_count_list, default=None,
                   help="COS iteration counts to compare (default 0,1,2,4; 0 = no calibration)")
    p.add_argument("--out", type=Path, default=Path("out/analyse"))
    _add_energy_options(p)
    _add_common(p)
    p.set_defaults(func=_cmd_analyse)


def _cmd_analyse(args: argparse.Namespace) -> int:
    from .analysis import compare_iterations
    from .checkpoint import check_output_dir
    from .reporting import format_offset_table, plot_offsets, write_json

    if args.snn is not None:
        return _analyse_snn(args)
    args.iterations = [0, 1, 2, 4] if args.iterations is None else args.iterations
    if args.rho is not None and not any(args.iterations):
        raise ValueError("--rho only applies to COS runs, and --iterations "
                         f"{','.join(map(str, args.iterations))} has none (0 = no calibration)")
    args.rho = 4 if args.rho is None else args.rho
    check_output_dir(args.out)
    _energy_model(args)  # refuses energy flags that --no-energy makes void, before any work
    ann, config, loader, label = _load(args)
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
        from .energy import iteration_operations, plot_layer_operations

        runs = iteration_operations(ann, loader, steps, args.iterations, rho=args.rho,
                                    energy=_energy_model(args), progress=not args.quiet)
        write_json(args.out / "operations.json", {"model": label, "dataset": config["dataset"],
                                                  "T": steps, "rho": args.rho, "runs": runs})
        plot_layer_operations(runs, steps, args.out / "layer_operations.png")
        print(f"wrote {args.out / 'operations.json'}, {args.out / 'layer_operations.png'}")
    return 0


def _source_ann_of(args: argparse.Namespace, snn) -> Path:
    """The ANN checkpoint a saved SNN was converted from: ``--model``, or the directory the SNN
    records, accepted only if its manifest still has the recorded SHA-256."""
    import hashlib

    from .checkpoint import MANIFEST_FILE

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
    from .analysis import analyse_offsets
    from .checkpoint import check_output_dir, load_checkpoint
    from .reporting import format_offset_table, write_json
    from .snn_artefact import load_snn

    given = [flag for flag, value in (("--iterations", args.iterations), ("--rho", args.rho))
             if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)} do(es) not apply with --snn: the saved SNN's own "
                         "method and parameters are analysed")
    check_output_dir(args.out)
    snn = load_snn(args.snn, allow_unverified=args.allow_unverified or None)
    ann, config = load_checkpoint(_source_ann_of(args, snn), device=args.device,
                                  allow_unverified=args.allow_unverified or None)
    loader, label = _test_loader(args, snn.config, args.snn)
    steps = args.T or int(config["activation"].get("levels", 4))
    report = analyse_offsets(ann, snn, list(loader), steps, progress=not args.quiet)
    name = snn.method.name
    print(format_offset_table({name: report}))
    write_json(args.out / "offsets.json", {"model": label, "snn": str(args.snn),
                                           "dataset": config["dataset"], "T": steps,
                                           "report": report.to_dict()})
    print(f"wrote {args.out / 'offsets.json'}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="QCFS vs COS on the shipped Fashion-MNIST model (what `make demo` runs)",
        description="Convert the shipped Fashion-MNIST QCFS model, simulate it with plain QCFS "
        "and with COS (ρ = 4) at T = 1..32, print the ANN vs SNN table and write a PNG plot.",
    )
    p.add_argument("--retrain", action="store_true",
                   help="retrain the model first with the command recorded in its model card")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="with --retrain: override the number of epochs")
    p.add_argument("--data-dir", type=Path, default=None)
    _add_follow_links(p)
    p.add_argument("--limit", type=_int_at_least(0), default=2000,
                   help="test images to simulate (default 2000, a fixed random subset; "
                   "0 = all 10000)")
    p.add_argument("--T", type=_int_list, default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--batch-size", type=_batch, default=250)
    p.add_argument("--mode", choices=("auto", "step", "layer", "hybrid"), default="auto")
    _add_cos_options(p)
    _add_energy_options(p)
    _add_common(p)
    p.set_defaults(func=_cmd_demo, calibration_samples=None, weight_bits=None,
                   allow_nonfinite=False, ignore_data_mismatch=False)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .checkpoint import check_output_dir, load_config
    from .reporting import format_accuracy_table
    from .shipped import SHIPPED_MODEL_DIR

    args.model = None
    if args.limit == 0:
        args.limit = None
    if args.epochs is not None and not args.retrain:
        raise ValueError("--epochs only applies with --retrain")
    specs = _method_specs("qcfs,cos", args)
    check_output_dir(args.out)
    if args.retrain:
        from .activations import ActivationSpec
        from .train import TrainConfig, train

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
    records = _run_methods(args, specs, args.T)
    print(format_accuracy_table(records))
    _print_energy(records)
    _write_comparison(records, args.out)
    return 0


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce", help="a COS paper row: our QCFS / COS accuracy per T beside the paper's",
        description="Convert a model trained with `spikebridge train --recipe NAME` with QCFS and "
        "with COS (ρ from the recipe), simulate the test set and print, per T, our accuracy, "
        "the paper's and the gap (ours − paper), for the ANN, QCFS and COS (docs/reproduce.md). "
        "The model must be the recipe's: same architecture, dataset and QCFS L.",
    )
    p.add_argument("--recipe", required=True,
                   help="recipe name (`spikebridge info` lists them) or a .toml file")
    p.add_argument("--model", required=True, type=Path,
                   help="checkpoint directory trained from the recipe")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="directory with the dataset's files")
    _add_follow_links(p)
    p.add_argument("--T", type=_int_list, default=None,
                   help="comma-separated time-steps (default: the recipe's, 1,2,4,8,16,32)")
    p.add_argument("--limit", type=_positive_int, default=None,
                   help="evaluate on a fixed random subset of N test images (default: all)")
    p.add_argument("--batch-size", type=_batch, default=250)
    p.add_argument("--mode", choices=("auto", "step", "layer", "hybrid"), default="auto",
                   help="simulation execution style (results are identical)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="load a checkpoint without (or failing) the SHA-256 manifest check")
    p.add_argument("--ignore-data-mismatch", action="store_true",
                   help="evaluate even if the test images differ from those the checkpoint "
                   "was evaluated on when it was trained (its recorded test_fingerprint)")
    p.add_argument("--json", type=Path, default=None, help="write the record here")
    _add_process_options(p)
    _add_common(p)
    p.set_defaults(func=_cmd_reproduce)


@_multi_process
def _cmd_reproduce(args: argparse.Namespace) -> int:
    from .checkpoint import check_output_file
    from .recipes import load_recipe
    from .reporting import write_json
    from .reproduce import format_reproduction, reproduce

    recipe = load_recipe(args.recipe)
    if args.json is not None:
        check_output_file(args.json)
    record = reproduce(recipe, args.model, steps=args.T, data_dir=args.data_dir,
                       limit=args.limit, batch_size=args.batch_size, device=args.device,
                       mode=args.mode, progress=not args.quiet,
                       allow_unverified=args.allow_unverified or None,
                       ignore_data_mismatch=args.ignore_data_mismatch, workers=args.workers)
    if not _is_main_process():
        return 0
    print(format_reproduction(record))
    if args.json:
        write_json(args.json, record)
        print(f"wrote {args.json}")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="list models, datasets, methods and the shipped model")
    p.set_defaults(func=_cmd_info)


def _cmd_info(_args: argparse.Namespace) -> int:
    from . import __version__
    from .methods import list_methods
    from .models import list_models
    from .shipped import SHIPPED_MODEL_DIR

    print(f"spikebridge {__version__}")
    print(f"models:   {', '.join(list_models())}")
    from .data.registry import DATASETS

    print("datasets (docs/data.md):")
    for info in DATASETS.values():
        size = "x".join(map(str, info.image_size)) if info.image_size else "SxS (--image-size)"
        classes = (f"{info.num_classes} classes" if info.num_classes
                   else "classes from its folders")
        norm = (f"mean {', '.join(f'{m:g}' for m in info.mean)}" if info.mean
                else "mean/std of the training split")
        print(f"  {info.name:<16} {classes}, {info.channels}x{size}, {info.storage}, "
              f"{norm}")
        print(f"  {'':<16} train: {info.train_transform}; test: {info.test_transform}")
    from .methods import METHODS

    print("methods (docs/methods.md):")
    for name in list_methods():
        method = METHODS[name]
        print(f"  {name:<20} {method.summary}")
        print(f"  {'':<20} converts: {' / '.join(method.source_kinds)} ANNs "
              f"(make one: {method.source_hint})")
    from .recipes import list_recipes, load_recipe

    print("recipes (docs/reproduce.md; train --recipe NAME, reproduce --recipe NAME):")
    for name in list_recipes():
        recipe = load_recipe(name)
        print(f"  {name:<20} {recipe.title}: {recipe.architecture}, L = {recipe.levels}, "
              f"ρ = {recipe.rho}")
    print(f"shipped model: {SHIPPED_MODEL_DIR}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="spikebridge", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_convert(sub)
    _add_export(sub)
    _add_evaluate(sub)
    _add_compare(sub)
    _add_analyse(sub)
    _add_demo(sub)
    _add_reproduce(sub)
    _add_info(sub)
    return parser


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _describe_failure(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an exception that ends a command.

    2: the input was wrong (options, files, data, model) and the message says what to change;
    1: the run itself failed (disk full, out of memory, diverged training, an internal error).
    """
    from .checkpoint import CheckpointError, CheckpointWriteError
    from .data import DatasetNotFoundError, IdxFormatError
    from .distributed import WorkerDiedError

    if isinstance(exc, CheckpointWriteError | WorkerDiedError):
        return 1, _one_line(str(exc))
    if isinstance(exc, CheckpointError | DatasetNotFoundError | IdxFormatError | ValueError):
        return 2, _one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return 1, (f"no space left on the device{where}; nothing was half-written (files "
                       "are committed atomically), free some space and run again")
        return 1, f"{exc.strerror or _one_line(str(exc))}{where}"
    if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc) or (
            "out of memory" in str(exc).lower()):
        return 1, ("out of memory: " + _one_line(str(exc))[:200]
                   + "; lower --batch-size (or --limit)")
    if isinstance(exc, FloatingPointError):
        return 1, _one_line(str(exc))
    return 1, (f"{type(exc).__name__}: {_one_line(str(exc))[:300]} — an internal error; rerun "
               "with --debug for the traceback and please report it")


def _one_line_warnings(command: str):
    """A ``warnings.showwarning`` printing ``spikebridge CMD: warning: ...`` lines (no source
    line echoed)."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        print(f"spikebridge {command}: warning: {_one_line(str(message))}",
              file=file or sys.stderr, flush=True)

    return show


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
        warnings.showwarning = _one_line_warnings(args.command)
    try:
        from .memory_reuse import retain_freed_memory

        # batch after batch reuses the same large buffers without page faults (memory_reuse);
        # SPIKEBRIDGE_RETAIN_FREED_MEMORY=0 turns it off
        retain_freed_memory()
        if getattr(args, "follow_links", False):  # read by the image-folder walk
            from .data.imagefolder import FOLLOW_LINKS_ENV

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
        code, message = _describe_failure(exc)
        print(f"spikebridge {args.command}: error: {message}", file=sys.stderr)
        return code
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
