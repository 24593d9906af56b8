"""Argument types and option groups shared by the commands, and the flags' meaning:
``--method`` specs (COS defaults read from the method), ``--model`` choices, the energy model.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from ..calibration import DEFAULT_CALIBRATION_SAMPLES


def method_names() -> list[str]:
    from ..methods import list_methods

    return list_methods()


def integers_at_least(minimum: int, maximum: int | None = None, what: str = "value"):
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


def bounds():
    from ..limits import MAX_BATCH, MAX_ITERATIONS, MAX_STEPS

    return MAX_STEPS, MAX_ITERATIONS, MAX_BATCH


MAX_STEPS, _MAX_ITERATIONS, _MAX_BATCH = bounds()


step_list = integers_at_least(1, MAX_STEPS, "number of time-steps T")  # time-steps T


count_list = integers_at_least(0, _MAX_ITERATIONS, "COS iterations")  # COS iteration counts


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``spikebridge CMD: error: ...``), exit code 2."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - argparse's signature
        kwargs.setdefault("allow_abbrev", False)  # `--mode` must not silently mean `--model`
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def device_name(text: str) -> str:
    """``--device``: validated before any work (a malformed name or absent hardware)."""
    from ..devices import DeviceError, resolve_device

    try:
        return str(resolve_device(text))
    except DeviceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def int_at_least(minimum: int, maximum: int | None = None, what: str = "value"):
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


positive_int = int_at_least(1)


step_count = int_at_least(1, MAX_STEPS, "number of time-steps")  # one T or ρ


batch_count = int_at_least(1, _MAX_BATCH, "batch size")


iteration_count = int_at_least(0, _MAX_ITERATIONS, "COS iterations")


def add_follow_links(p: argparse.ArgumentParser) -> None:
    p.add_argument("--follow-links", action="store_true",
                   help="follow symbolic links to directories in ImageNet / image-folder "
                   "trees (each directory read once: loops are detected); off by default")


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--device", default="cpu", type=device_name,
                        help="torch device, e.g. cpu, cuda or cuda:1 (default cpu); checked "
                        "before any work")
    parser.add_argument("--debug", action="store_true",
                        help="on failure, show the full Python traceback instead of one line")


def add_process_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("processes (docs/distributed.md)")
    g.add_argument("--nproc", type=int, default=1,
                   help="run in N local processes with torch.distributed (DDP training; "
                   "evaluation shares the test set); torchrun --nproc_per_node N -m spikebridge "
                   "... does the same. With --device cuda each process takes one GPU")
    g.add_argument("--workers", type=int, default=0,
                   help="image-decoding processes per process for streamed datasets (imagenet, "
                   "imagefolder; default 0)")


def add_trust_factory(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-factory", action="store_true",
                   help="load a checkpoint of your own model (trained with --model-factory): "
                   "rebuilding it imports and calls the factory its config.json names, code "
                   "outside the checkpoint; give it only for checkpoints you trust")


def add_model_and_data(p: argparse.ArgumentParser, *, conversion: bool = True) -> None:
    """Options of commands that load a checkpoint and its test set; ``conversion``: also the
    options of commands that convert with a chosen method (execution mode, calibration data,
    weight bits)."""
    p.add_argument("--model", default=None,
                   help="checkpoint directory from `spikebridge train`, or per method / per "
                   "activation kind: relu=DIR1,qcfs=DIR2,cos=DIR3 (default: the shipped model "
                   "of the kind each method needs)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="directory with the dataset's files (default: the Debian package's)")
    add_follow_links(p)
    p.add_argument("--limit", type=positive_int, default=None,
                   help="evaluate on a fixed random subset of N test images (default: all; "
                   "analyse: 1000)")
    p.add_argument("--batch-size", type=batch_count, default=250)
    p.add_argument("--allow-unverified", action="store_true",
                   help="load checkpoints without (or failing) the SHA-256 manifest check "
                   "(docs/reliability.md); also SPIKEBRIDGE_ALLOW_UNVERIFIED=1")
    add_trust_factory(p)
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
    p.add_argument("--calibration-samples", type=positive_int, default=None,
                   help="training images that data-based methods (maxnorm, robustnorm, "
                   "threshold-balancing, rmp, opi, ecc) measure their statistics on "
                   f"(default {DEFAULT_CALIBRATION_SAMPLES}); refused for other methods")
    p.add_argument("--weight-bits", type=int, default=None,
                   help="quantize every conv/linear weight to b-bit signed integers (2..16) "
                   "after conversion (docs/methods.md §7.6); works with every method")
    p.add_argument("--weight-rounding", choices=("nearest", "trunc", "ecc"), default="nearest",
                   help="with --weight-bits: round to nearest (default), truncate, or ECC's own "
                   "grid (2^(b-1) levels, truncated; docs/methods.md §7.6)")
    add_neuron_option(p)


def add_neuron_option(p: argparse.ArgumentParser) -> None:
    """``--neuron if|memory``: the method's IF neurons or signed neurons with memory (§2.7)."""
    p.add_argument("--neuron", choices=("if", "memory"), default="if",
                   help="if: the method's integrate-and-fire neurons (default); memory: signed "
                   "neurons with memory, which take back a spike when the summed input falls, so "
                   "that the spike count does not depend on the input's order in time (event "
                   "input; docs/methods.md §2.7). Not for cos, strelu or hard-reset methods")


def add_input_option(p: argparse.ArgumentParser) -> None:
    """``--input images|events``: what the SNN is shown at every step (docs/methods.md §2.6)."""
    p.add_argument("--input", choices=("images", "events"), default="images",
                   help="images: the test image at every step (direct encoding, default); "
                   "events: an event-camera data set's recordings (nmnist, cifar10-dvs, "
                   "dvs-gesture) sliced into max(T) frames, one per step; data-based methods "
                   "calibrate on the frames too (their ANN statistics on the frames' mean)")


def cos_defaults() -> dict:
    """COS's parameters and their defaults, read from the method (``--rho`` & co.)."""
    from ..methods import method_defaults

    return method_defaults("cos")


def add_cos_options(p: argparse.ArgumentParser) -> None:
    """COS flags; default None so that a flag given for a method without COS is refused."""
    g = p.add_argument_group("COS options (docs/methods.md §4; refused for other methods)")
    g.add_argument("--rho", type=step_count, default=None,
                   help="pre-simulation steps ρ (default 4)")
    g.add_argument("--iterations", type=iteration_count, default=None,
                   help="±1-spike corrections per neuron (default 1; 0 = plain QCFS; the "
                   "lightweight variant has exactly one)")
    g.add_argument("--variant", choices=("shift", "lightweight"), default=None,
                   help="shift (default; Theorems 1-2) or lightweight (start from v(ρ))")
    g.add_argument("--epsilon", type=float, default=None,
                   help="ε as a fraction of θ (default 0.001; shift variant only)")


def add_energy_options(p: argparse.ArgumentParser) -> None:
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


ENERGY_FLAGS = {"mac_pj": "--mac-pj", "ac_pj": "--ac-pj", "first_layer": "--first-layer"}


def energy_model(args: argparse.Namespace):
    from ..energy import EnergyModel

    given = [flag for key, flag in ENERGY_FLAGS.items() if getattr(args, key, None) is not None]
    if given and getattr(args, "no_energy", False):
        raise ValueError(f"{', '.join(given)} set(s) the energy model, which --no-energy turns "
                         "off; drop one of them")
    mac_pj = 4.6 if getattr(args, "mac_pj", None) is None else args.mac_pj
    ac_pj = 0.9 if getattr(args, "ac_pj", None) is None else args.ac_pj
    return EnergyModel(mac_pj=mac_pj, ac_pj=ac_pj,
                       first_layer=getattr(args, "first_layer", None) or "once")


METHODS_HELP = (
    "conversion method, optionally with parameters as name:key=value[:key=value] "
    "(e.g. rmp:scale=0.9, ecc:tre=0:cmb=0). Methods: {}. `spikebridge info` describes them; "
    "docs/methods.md has every equation."
)


def method_specs(text: str, args: argparse.Namespace) -> list:
    """Parse ``--method(s)``; COS takes its defaults from the --rho/--iterations/... flags.

    Flags that no chosen method uses are refused rather than ignored: a COS flag without a COS
    method, ``--epsilon`` with the lightweight variant (it computes no shift), and
    ``--calibration-samples`` without a data-based method.
    """
    from ..methods import MethodSpec, get_method, parse_method_spec

    specs = [parse_method_spec(item) for item in text.split(",") if item.strip()]
    if not specs:
        raise ValueError("name at least one conversion method")
    given = {key: getattr(args, key, None) for key in cos_defaults()}
    given = {key: value for key, value in given.items() if value is not None}
    if given and not any(spec.name == "cos" for spec in specs):
        flags = ", ".join("--" + key for key in given)
        raise ValueError(f"{flags} only appl{'ies' if len(given) == 1 else 'y'} to method cos, "
                         "not to "
                         f"{', '.join(spec.label for spec in specs)}")
    result = []
    for spec in specs:
        if spec.name == "cos":
            params = {**cos_defaults(), **given, **spec.params}
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
    energy_model(args)  # refuses energy flags that --no-energy makes void
    samples = getattr(args, "calibration_samples", None)
    if samples is not None and not any(method.needs_calibration_data() for method in methods):
        raise ValueError("--calibration-samples only applies to data-based methods (maxnorm, "
                         "robustnorm, threshold-balancing, rmp, opi, ecc); "
                         f"{', '.join(spec.label for spec in result)} use(s) no data")
    return result


def model_choices(text: str | None) -> tuple[Path | None, dict[str, Path]]:
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


def one_method(args: argparse.Namespace) -> list:
    specs = method_specs(args.method, args)
    if len(specs) != 1:
        raise ValueError("convert takes one --method")
    return specs


def snn_directories(text: str) -> list[Path]:
    return [Path(item) for item in text.split(",") if item.strip()]


DEFAULT_FACTORY_DATASET = "fashion-mnist"


def add_own_model_options(p: argparse.ArgumentParser, *, dataset: bool = True,
                          weights: str | None = None) -> None:
    """``--model-factory``, ``--factory-arg``, ``--init-weights`` (docs/your-model.md, "From the
    command line"); ``dataset``: also ``--dataset``, for commands that otherwise take the data
    set from a checkpoint; ``weights``: the help of ``--init-weights``."""
    g = p.add_argument_group("your own model (docs/your-model.md)")
    g.add_argument("--model-factory", default=None, metavar="MODULE:FUNCTION",
                   help="build the model by calling FUNCTION of the importable module MODULE "
                   "(e.g. mynets.cnn:build), which returns a torch.nn.Module; the current "
                   "directory is importable, like uvicorn's")
    g.add_argument("--factory-arg", action="append", default=None, metavar="KEY=VALUE",
                   help="a keyword argument of the factory (repeatable); VALUE is read as a JSON "
                   "literal (width=16, sizes=[8,16], bias=false), else as a string (name=wide)")
    g.add_argument("--init-weights", type=Path, default=None, metavar="FILE",
                   help=weights or "weights of the factory's model: a .safetensors file or a "
                   "state dict saved with torch.save (a dict with a 'state_dict' or 'model' "
                   "entry works too; read with weights_only=True, never unpickled)")
    if dataset:
        g.add_argument("--dataset", default=None,
                       help="with --model-factory: the data set to test (and calibrate) the "
                       f"model on (default {DEFAULT_FACTORY_DATASET}; `spikebridge info`), "
                       "normalized as `spikebridge train` normalizes it")


def model_factory(args: argparse.Namespace):
    """``--model-factory`` with its ``--factory-arg`` values as a
    :class:`~spikebridge.models.factory.ModelFactory` (``None`` without); nothing is imported
    yet. ``--factory-arg`` without ``--model-factory`` is refused."""
    from ..models.factory import ModelFactory, parse_factory_args

    target, items = getattr(args, "model_factory", None), getattr(args, "factory_arg", None)
    if target is None:
        if items:
            raise ValueError("--factory-arg applies to --model-factory (the keyword arguments "
                             "of your factory); give --model-factory MODULE:FUNCTION")
        return None
    return ModelFactory(target, parse_factory_args(items or ()))


def own_model_conflicts(args: argparse.Namespace):
    """The factory of ``--model-factory`` (``None`` without), after refusing what does not
    apply with it or without it: ``--model DIR`` (a checkpoint has its model, weights and data
    set) together with ``--model-factory``, ``--init-weights`` or ``--dataset``."""
    factory = model_factory(args)
    init_weights, dataset = getattr(args, "init_weights", None), getattr(args, "dataset", None)
    if factory is None:
        given = [flag for flag, value in (("--init-weights", init_weights),
                                          ("--dataset", dataset)) if value is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to a model from "
                "--model-factory; a checkpoint (--model DIR, or the shipped model) brings its "
                "own weights and data set")
        return None
    if getattr(args, "model", None) is not None:
        raise ValueError("--model-factory and --model exclude each other: --model names a "
                         "checkpoint, whose config.json already records the factory it was "
                         "trained from (if any)")
    return factory
