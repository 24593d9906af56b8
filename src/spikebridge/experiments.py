"""Experiments: the load → convert → calibrate → evaluate flow, written once for every caller.

The command line (:mod:`spikebridge.cli`), paper reproduction (:mod:`spikebridge.reproduce`),
the benchmarks and Python users run the same steps::

    model = load_model("runs/fashion", RunOptions(limit=2000))       # ANN + its test loader
    model = load_factory_model(ModelFactory("mynet:build"), "digits", RunOptions())  # or yours
    snn, calibration = convert_model(model, get_method("cos", rho=4), RunOptions())
    result = evaluate_snn(snn, model, [1, 2, 4], RunOptions())        # accuracy at every t ≤ T

:func:`run_methods` does this for several methods (each model loaded once, its ANN accuracy
measured once) and returns one result record per method (:func:`spikebridge.reporting.
evaluation_record`); :func:`run_saved_snns` evaluates saved SNNs; :func:`iteration_snns` is the
plain-QCFS-vs-COS-with-k-iterations ladder that :func:`compare_iterations` (offset spikes) and
:func:`iteration_operations` (operation counts) walk.

This is the layer below the CLI and above everything else: it may import any module of the
package except :mod:`spikebridge.cli`; nothing below imports it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed, runtime_estimate
from .activations import ActivationSpec
from .analysis import OffsetReport, analyse_offsets
from .calibration import DEFAULT_CALIBRATION_SAMPLES, CalibrationData
from .checkpoint import load_checkpoint
from .checkpoint_model import factory_model, factory_record
from .convert import convert
from .data.event_sets import event_dataset_names, event_loader, open_event_dataset
from .data.pipeline import evaluation_loader, open_checkpoint_split, open_dataset
from .data.registry import dataset_info
from .energy import EnergyModel
from .evaluation import Evaluation, evaluate
from .input_checks import DataMismatchError, check_test_set
from .methods import ConversionMethod, MethodSpec, get_method
from .models.factory import ModelFactory
from .network import SpikingNetwork
from .reporting import evaluation_record, record_fields
from .simulate import resolve_mode
from .snn_artefact import load_snn

__all__ = [
    "DEFAULT_CALIBRATION_SAMPLES",
    "LoadedModel",
    "RunOptions",
    "calibration_data",
    "compare_iterations",
    "convert_model",
    "estimate_seconds",
    "evaluate_snn",
    "event_value",
    "factory_ann",
    "frame_loader",
    "iteration_operations",
    "iteration_snns",
    "load_factory_model",
    "load_model",
    "neuron_model",
    "run_label",
    "run_methods",
    "run_saved_snns",
    "sample_count",
    "test_loader",
]

@dataclass(frozen=True)
class RunOptions:
    """How an experiment runs: data, device, execution and counting (the CLI's common flags).

    ``limit``: evaluate a fixed random subset of that many test images (``None``: all);
    ``nonfinite``: ``"error"`` or ``"propagate"`` (:func:`spikebridge.simulate`);
    ``energy``: the energy model of the operation counts (``None``: 45 nm defaults);
    ``input``: ``"constant"`` (images at every step) or ``"sequence"`` (an event-camera data
    set's recordings as frames ``[T, B, ...]``, one per step, ``T = frames``, default the data
    set's: the test and calibration loaders are :func:`frame_loader`'s;
    :func:`spikebridge.simulate`'s ``input``); ``neuron``: ``"if"`` or ``"memory"``
    (:func:`spikebridge.convert`'s ``neuron``; signed neurons with memory, docs/methods.md §2.7).
    """

    device: str | torch.device = "cpu"
    mode: str = "auto"
    batch_size: int = 250
    limit: int | None = None
    data_dir: str | os.PathLike[str] | None = None
    workers: int = 0
    progress: bool = False
    allow_unverified: bool | None = None
    trust_factory: bool = False  # rebuild checkpoints of factory models (runs their code)
    ignore_data_mismatch: bool = False
    calibration_samples: int | None = None
    weight_bits: int | None = None
    weight_rounding: str = "nearest"
    count_operations: bool = True
    energy: EnergyModel | None = None
    nonfinite: str = "error"
    input: str = "constant"
    frames: int | None = None
    neuron: str = "if"  # "memory": signed neurons with memory (docs/methods.md §2.7)


@dataclass
class LoadedModel:
    """An ANN checkpoint (``directory``; ``None`` for a model straight from a model factory)
    with the loader of its test set (this process's share)."""

    ann: nn.Module
    config: dict[str, Any]
    loader: Any
    label: str
    directory: Path | None


def test_loader(config: dict[str, Any], source: str | os.PathLike[str],
                options: RunOptions) -> tuple[Any, str]:
    """(test loader, label) for the data set a checkpoint's (or saved SNN's) config names.

    The test files must be the model's (shape, classes, fingerprint; ``ignore_data_mismatch``
    waives the fingerprint): :func:`spikebridge.input_checks.check_test_set`.
    """
    if not isinstance(config.get("dataset"), str):
        raise ValueError(f"{source}/config.json names no dataset (field 'dataset'), so there "
                         "is no test set to evaluate it on; add it (e.g. \"dataset\": "
                         "\"fashion-mnist\") and re-sign the checkpoint")
    label = f"{config['architecture']} ({Path(source).name})"
    if options.input == "sequence":
        loader = frame_loader(config, "test", options)  # refuses a non-event set, another shape
        if not options.ignore_data_mismatch:
            # the recordings' count images are what the fingerprint was taken of (one more read
            # of the test files, about a second for N-MNIST's 10 000)
            check_test_set(open_checkpoint_split(config, "test", options.data_dir), config,
                           source)
        return loader, label
    full = open_checkpoint_split(config, "test", options.data_dir)
    check_test_set(full, config, source, ignore=options.ignore_data_mismatch)
    return _evaluation_share(full, options), label


def frame_loader(config: dict[str, Any], split: str, options: RunOptions, *,
                 samples: int | None = None, shard: bool = True) -> Any:
    """The recordings of the event data set ``config`` names as frames ``[T, B, C, H, W]``
    (``T = options.frames``, default the data set's; :func:`spikebridge.data.event_sets.
    event_loader`), for ``input="sequence"``: the fixed random subset (seed 0) of
    ``options.limit`` test or ``samples`` training recordings — those of the count-image
    subset — and, with ``shard``, this process's share of its batches."""
    name = config["dataset"]
    info = dataset_info(name)
    if info.events is None:
        raise ValueError(f"input='sequence' (--input events) runs on an event-camera data set's "
                         f"frames; {info.name} is not one ({', '.join(event_dataset_names())} "
                         "are)")
    expected = (config["in_channels"], *config.get("input_size", info.image_size))
    if tuple(expected) != (info.channels, *info.image_size):
        raise DataMismatchError(f"the model takes inputs of shape {list(expected)} but "
                                f"{info.name}'s frames are {[info.channels, *info.image_size]}")
    n = len(open_event_dataset(info.name, split, options.data_dir))
    limit = options.limit if split == "test" else samples
    order = (torch.arange(n) if limit is None or limit >= n
             else torch.randperm(n, generator=torch.Generator().manual_seed(0))[:limit])
    world, size = (distributed.world_size() if shard else 1), options.batch_size
    if world > 1:  # whole batches dealt out, as evaluation_loader does
        batches = -(-len(order) // size)
        rank = distributed.rank()
        order = order[rank * batches // world * size:(rank + 1) * batches // world * size]
    return event_loader(info.name, split, options.data_dir, frames=options.frames,
                        batch_size=size, indices=order.tolist())


def event_value(loader: Any) -> float:
    """What one input event adds to a frame of ``loader``'s batches: ``1/n`` for frames divided
    by ``n`` (a :class:`~spikebridge.events.ToFrames` transform's ``normalization``), else 1
    (:class:`~spikebridge.energy.OperationCounter`)."""
    return 1.0 / float(getattr(getattr(loader, "transform", None), "normalization", 1.0))


def _evaluation_share(test: Any, options: RunOptions) -> Any:
    """The loader of this process's share of ``test`` (its fixed ``--limit`` subset)."""
    subset = test.subset(options.limit, seed=0)
    return evaluation_loader(subset, options.batch_size, workers=options.workers)


def load_model(model_dir: str | os.PathLike[str], options: RunOptions, *,
               check: Callable[[dict[str, Any]], None] | None = None) -> LoadedModel:
    """Load the ANN in ``model_dir`` (safely: safetensors + signed manifest) and open its test
    set; ``check(config)`` runs in between (before any data is read)."""
    ann, config = load_checkpoint(model_dir, device=options.device,
                                  allow_unverified=options.allow_unverified,
                                  trust_factory=options.trust_factory)
    if check is not None:
        check(config)
    loader, label = test_loader(config, model_dir, options)
    return LoadedModel(ann, config, loader, label, Path(model_dir))


def factory_ann(factory: ModelFactory, dataset: str, options: RunOptions, *,
                init_weights: str | os.PathLike[str] | None = None,
                test: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """A user's model straight from its factory, as it is (no checkpoint, nothing trained):
    weights from ``init_weights`` (a state dict, :mod:`spikebridge.models.weights_file`) or
    the factory's own, checked on ``dataset``'s image size and class count; and the config
    that names the data set for the test images and calibration (its normalization is
    spikebridge's for that data set, as ``spikebridge train`` uses it). ``test``: that data
    set's test split, if already open."""
    if test is None:
        test = open_dataset(dataset, "test", options.data_dir, augment=False)
    shape = (test.in_channels, *test.input_size)
    as_it_is = ActivationSpec("relu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # untrained weights are the same in every process and every run
        ann, weights = factory_model(factory, as_it_is, init_weights=init_weights,
                                     input_shape=shape, num_classes=test.num_classes)
    ann.input_shape = shape
    config = {
        "architecture": factory.target, "num_classes": test.num_classes,
        "in_channels": test.in_channels, "model_kwargs": {}, "activation": as_it_is.to_dict(),
        "model_factory": factory_record(factory, as_it_is, None),
        "init_weights": None if weights is None else weights.record(),
        "dataset": test.name, "classes": list(test.classes),
        "normalization": {"mean": list(test.mean), "std": list(test.std)},
        "input_size": list(test.input_size), "test_fingerprint": None,
    }
    return ann.to(options.device).eval(), config


def load_factory_model(factory: ModelFactory, dataset: str, options: RunOptions, *,
                       init_weights: str | os.PathLike[str] | None = None) -> LoadedModel:
    """:func:`factory_ann` with the loader of ``dataset``'s test set."""
    test = open_dataset(dataset, "test", options.data_dir, augment=False)
    ann, config = factory_ann(factory, dataset, options, init_weights=init_weights, test=test)
    loader = (frame_loader(config, "test", options) if options.input == "sequence"
              else _evaluation_share(test, options))
    return LoadedModel(ann, config, loader, factory.describe(), None)


def calibration_data(config: dict[str, Any], options: RunOptions) -> CalibrationData:
    """Training images of the model's data set for data-based methods (a fixed subset)."""
    samples = options.calibration_samples or DEFAULT_CALIBRATION_SAMPLES
    if options.input == "sequence":  # the recordings as the SNN sees them (same on every process)
        loader = frame_loader(config, "train", options, samples=samples, shard=False)
        return CalibrationData(loader, sample_count(loader), progress=options.progress,
                               input="sequence")
    train = open_checkpoint_split(config, "train", options.data_dir)
    subset = train.subset(min(samples, len(train)), seed=0)
    # every process calibrates on the same images (identical networks), not on a share
    loader = evaluation_loader(subset, options.batch_size, workers=options.workers, shard=False)
    return CalibrationData(loader, len(subset), progress=options.progress)


def convert_model(ann: nn.Module, config: dict[str, Any], method: ConversionMethod,
                  options: RunOptions) -> tuple[SpikingNetwork, CalibrationData | None]:
    """``convert`` with the calibration data the method needs (none for data-free methods)."""
    calibration = calibration_data(config, options) if method.needs_calibration_data() else None
    snn = convert(ann, method, calibration_data=calibration, weight_bits=options.weight_bits,
                  weight_rounding=options.weight_rounding, neuron=options.neuron,
                  progress=options.progress)
    return snn, calibration


def estimate_seconds(snn: SpikingNetwork, x: torch.Tensor | None, images: int,
                     steps: Sequence[int], options: RunOptions) -> float:
    """Seconds a short probe on batch ``x`` predicts for simulating ``images`` (0 outside the
    main process: every process runs its share in the same time)."""
    if not distributed.is_main_process() or x is None:
        return 0.0
    if options.input == "sequence":
        x = x[0]  # a frame's cost is an image's (the prefix once per frame aside)
    snn.to(options.device).eval()
    return runtime_estimate.estimate_simulation_seconds(
        snn, x.to(options.device), list(steps), images, mode=options.mode,
        nonfinite=options.nonfinite)


def evaluate_snn(snn: SpikingNetwork, loader: Any, steps: Sequence[int], options: RunOptions,
                 *, ann: nn.Module | None = None, label: str | None = None) -> Evaluation:
    """Accuracy at every ``t ≤ T`` (and the ANN's, if given) with operations counted."""
    label = label or snn.method.name
    return evaluate(snn, loader, list(steps), ann=ann, mode=options.mode, device=options.device,
                    progress=options.progress,
                    description=f"{label}: simulating T={max(steps)}",
                    count_operations=options.count_operations, energy=options.energy,
                    nonfinite=options.nonfinite, input=options.input,
                    event_value=event_value(loader) if options.input == "sequence" else 1.0)


def sample_count(loader: Any) -> int:
    """Samples a loader yields: its ``indices`` (an event loader's subset) or its data set."""
    indices = getattr(loader, "indices", None)
    return len(indices) if indices is not None else len(loader.dataset)


def _run_extra(snn: SpikingNetwork, label: str, options: RunOptions, weight_bits: int | None,
               calibration_samples: int | None) -> dict[str, Any]:
    return {"label": label, "mode": resolve_mode(snn, options.mode, torch.device(options.device)),
            "device": str(options.device), "weight_bits": weight_bits,
            "calibration_samples": calibration_samples, "neuron": neuron_model(snn)}


def neuron_model(snn: SpikingNetwork) -> str:
    """``"memory"`` if the SNN's neurons are signed neurons with memory (§2.7), else ``"if"``."""
    return "memory" if any(n.memory for n in snn.neurons().values()) else "if"


def run_label(spec: MethodSpec, neuron: str) -> str:
    """How results name a method's run: ``ecc``, ``rmp(scale=0.9)``, ``ecc+memory``."""
    return spec.label if neuron == "if" else f"{spec.label}+{neuron}"


#: ``announce(estimates, images, steps)``: told, before any simulation, how long each run is
#: expected to take (``[(label, seconds)]``) — the CLI prints a notice for long commands.
Announcer = Callable[[list[tuple[str, float]], int, list[int]], None]


def run_methods(specs: Sequence[MethodSpec],
                model_for: Callable[[MethodSpec], Path | LoadedModel],
                steps: Sequence[int], options: RunOptions, *,
                announce: Announcer | None = None) -> list[dict[str, Any]]:
    """Convert and evaluate each method of ``specs`` on its model (``model_for(spec)``: a
    checkpoint directory, or a model already loaded, e.g. :func:`load_factory_model`).

    Every method is converted first (so ``announce`` covers the whole run), then simulated;
    each model is loaded once and its ANN evaluated once. Returns one result record per method
    (with ``ann_accuracy``).
    """
    steps = list(steps)
    loaded: dict[Path | int, LoadedModel] = {}  # by directory, or by id of a loaded model
    probes: dict[Path | int, torch.Tensor] = {}  # one batch per model: no second start-up
    prepared, estimates = [], []
    for spec in specs:
        method = get_method(spec.name, **spec.params)
        source = model_for(spec)
        directory = id(source) if isinstance(source, LoadedModel) else Path(source)
        if directory not in loaded:
            loaded[directory] = (source if isinstance(source, LoadedModel)
                                 else load_model(directory, options))
        model = loaded[directory]
        snn, calibration = convert_model(model.ann, model.config, method, options)
        if directory not in probes and distributed.is_main_process():
            probes[directory] = next(iter(model.loader))[0]
        estimates.append((run_label(spec, options.neuron), estimate_seconds(
            snn, probes.get(directory), sample_count(model.loader), steps, options)))
        prepared.append((spec, directory, snn, calibration))
    if announce is not None and prepared:
        announce(estimates, max(sample_count(loaded[d].loader) for _, d, _, _ in prepared), steps)
    ann_accuracy: dict[Path | int, float | None] = {}
    records = []
    for spec, directory, snn, calibration in prepared:
        model = loaded[directory]
        first = directory not in ann_accuracy
        label = run_label(spec, options.neuron)
        result = evaluate_snn(snn, model.loader, steps, options,
                              ann=model.ann if first else None, label=label)
        if first:
            ann_accuracy[directory] = result.ann_accuracy
        extra = _run_extra(snn, label, options, options.weight_bits,
                           None if calibration is None else calibration.samples)
        record = evaluation_record(result, snn, steps, dataset=model.config["dataset"],
                                   model=model.label, extra=extra)
        record["ann_accuracy"] = ann_accuracy[directory]
        records.append(record)
    return records


def run_saved_snns(directories: Sequence[Path], steps: Sequence[int], options: RunOptions, *,
                   announce: Announcer | None = None) -> list[dict[str, Any]]:
    """Evaluate saved SNNs (:func:`spikebridge.save_snn`): no ANN, no conversion, no
    calibration data; one result record each (``ann_accuracy`` ``None``)."""
    steps = list(steps)
    records = []
    for directory in directories:
        snn = load_snn(directory, device=options.device, allow_unverified=options.allow_unverified)
        config = snn.config
        loader, label = test_loader(config, directory, options)
        spec = MethodSpec(config["snn"]["method"], config["snn"]["params"])
        label = run_label(spec, neuron_model(snn))
        if announce is not None and distributed.is_main_process():
            seconds = estimate_seconds(snn, next(iter(loader))[0], sample_count(loader), steps,
                                       options)
            announce([(label, seconds)], sample_count(loader), steps)
        result = evaluate_snn(snn, loader, steps, options, label=label)
        conversion = config["snn"].get("conversion", {})
        extra = {**_run_extra(snn, label, options, snn.weight_bits,
                              conversion.get("calibration_samples")), "snn": str(directory)}
        record = evaluation_record(result, snn, steps, dataset=config["dataset"], model=label,
                                   extra=extra)
        record["ann_accuracy"] = None
        records.append(record)
    return records


def iteration_snns(ann: nn.Module, iterations: Iterable[int], *, rho: int = 4
                   ) -> Iterator[tuple[int, str, SpikingNetwork]]:
    """``(k, label, snn)``: plain QCFS for ``k = 0`` (no calibration), COS with ``k``
    iterations otherwise (docs/methods.md §4.5; the COS paper's Table 3)."""
    for k in iterations:
        if k == 0:
            yield k, "qcfs (no calibration)", convert(ann, "qcfs")
        else:
            yield k, f"cos ρ={rho}, {k} iteration(s)", convert(ann, "cos", rho=rho, iterations=k)


def compare_iterations(
    ann: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], steps: int,
    iterations: Iterable[int] = (0, 1, 2, 4), *, rho: int = 4, progress: bool = False,
) -> dict[int, OffsetReport]:
    """ψ statistics with 0 (plain QCFS), 1, 2, … COS iterations (Table 3 / Table S2 analogue)."""
    batches = list(batches)
    return {k: analyse_offsets(ann, snn, batches, steps, progress=progress,
                               description=f"offsets, {k} iteration(s)")
            for k, _label, snn in iteration_snns(ann, iterations, rho=rho)}


def iteration_operations(
    ann: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], steps: int,
    iterations: Sequence[int], *, rho: int = 4, energy: EnergyModel | None = None,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Operation counts of plain QCFS (0 iterations) and COS with each iteration count at T.

    ``{label: {"method", "params", "snn_accuracy", "ops", "operations"}}`` — what
    ``spikebridge analyse`` plots per layer (:func:`spikebridge.reporting.plot_layer_operations`).
    """
    batches = list(batches)
    runs: dict[str, dict[str, Any]] = {}
    for k, label, snn in iteration_snns(ann, iterations, rho=rho):
        result = evaluate(snn, batches, [steps], mode="layer" if k else "auto",
                          progress=progress, description=f"operations: {label}", energy=energy)
        runs[label] = {"method": snn.method.name, "params": snn.method.params(),
                       "snn_accuracy": {str(steps): result.snn_accuracy[steps]},
                       **record_fields(result.operations, [steps])}
    return runs
