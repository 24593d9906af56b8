"""The simulation engine: running a converted SNN over time.

Tensors over time are ``[T, B, ...]``. Three execution styles give bit-identical results:

* ``"step"`` — the spiking body runs once per time-step on ``[B, ...]`` tensors, neurons keep
  their potential between calls. Smallest working set and allocations.
* ``"layer"`` — each layer runs all steps at once: stateless layers see time folded into the
  batch (``[T*B, ...]``) and each IF layer scans its whole input sequence. Needed by COS
  (a layer's calibration reads its first ρ input frames before its real run); each weight is
  read once for all T frames and the convolutions see larger batches — the faster choice on
  GPUs, and on CPU when freed memory is retained (:mod:`spikebridge.memory_reuse`; otherwise
  its large per-layer buffers page-fault anew every batch).
* ``"hybrid"`` — for calibrating methods: the first ρ frames layer-wise, the rest step by step
  (each neuron continues from its calibrated state). Same result as ``"layer"``.

Two kinds of input, chosen explicitly with ``input=`` (never guessed from the tensor's rank):

* ``"constant"`` (default, direct encoding, docs/methods.md §2.6) — one analog image ``[B, ...]``
  presented at every step. The time-invariant prefix (the layers before the first IF neurons)
  runs once per batch and its result is the same current at every step.
* ``"sequence"`` — one input frame per step, ``[T, B, ...]`` (event-camera frames,
  :class:`spikebridge.events.ToFrames`; docs/methods.md §2.6 "Event input"). The prefix runs on
  every frame: step by step on ``x[t]``, layer-wise on the folded ``[T*B, ...]`` frames (no
  repeat). ``T`` is the sequence's length; a sequence repeating ``x`` T times gives exactly the
  constant-input result.

Either way the output layer's running mean gives the accuracy at every ``t <= T`` from one run
(§2.6). Accuracy over a data set, with operation counters attached, is the harness above this
module (:mod:`spikebridge.evaluation`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .deprecation import moved_names
from .input_checks import (
    InputError,
    check_input,
    check_nonfinite_policy,
    infer_input_channels,
    nonfinite_error,
)
from .limits import (
    MAX_STEPS,
    ResourceLimitError,
    UsageError,
    check_memory,
    check_steps,
    simulation_bytes,
)
from .memory_reuse import retention_active
from .network import SpikingNetwork
from .neurons import sequence_mode

__all__ = [
    "EXECUTION_MODES",
    "INPUT_KINDS",
    "check_input_kind",
    "check_labels",
    "check_sequence",
    "check_simulation_size",
    "check_steps",
    "correct_over_time",
    "layer_chunk_size",
    "output_width",
    "preferred_mode",
    "resolve_mode",
    "simulate",
]

EXECUTION_MODES = ("auto", "step", "layer", "hybrid")
#: What ``simulate``'s ``x`` is: one image for every step, or one frame per step (module doc).
INPUT_KINDS = ("constant", "sequence")
# Layer-wise execution holds [T·B, ...] activations: the batch is processed in chunks so that
# T·B stays at most this (bounded memory whatever the caller's batch size).
LAYER_MODE_FOLDED_BATCH = 512


def preferred_mode(device: torch.device, calibrating: bool = False) -> str:
    """Execution style to use when nothing forces one (docs/benchmarks.md §4 has the numbers).

    Layer-wise on CUDA, and on CPU when freed memory is retained
    (:func:`spikebridge.memory_reuse.retain_freed_memory`, which the ``spikebridge`` command
    sets): every weight is then read once for all T frames — up to 1.7× faster than step by
    step on small batches (VGG-16, 8 images) and never slower on the shipped models. Without
    it, layer-wise buffers page-fault anew every batch (up to 1.3× slower), so the CPU runs
    step by step, and a calibrating method (COS) its first ρ frames layer-wise, then step by
    step ("hybrid").
    """
    if device.type == "cuda" or retention_active():
        return "layer"
    return "hybrid" if calibrating else "step"


def resolve_mode(snn: SpikingNetwork, mode: str, device: torch.device) -> str:
    """The execution style ``simulate`` will use for ``mode`` (``"auto"`` resolved)."""
    if mode not in EXECUTION_MODES:
        raise ValueError(f"mode must be one of {EXECUTION_MODES}, got {mode!r}")
    calibrating = snn.method.needs_sequence_mode()
    if mode == "step" and calibrating:
        raise ValueError(
            f"method {snn.method.name!r} calibrates each layer from its first input frames and "
            "needs layer-wise execution for them; use mode='layer', 'hybrid' or 'auto'"
        )
    if mode == "auto":
        return preferred_mode(device, calibrating)
    if mode == "hybrid" and not calibrating:
        return "step"
    return mode


def _repeat_over_time(value: torch.Tensor, steps: int) -> torch.Tensor:
    expanded = value.unsqueeze(0).expand(steps, *value.shape)
    return expanded.reshape(steps * value.shape[0], *value.shape[1:])


def simulate(
    snn: SpikingNetwork, x: torch.Tensor, steps: int | None = None, *, mode: str = "auto",
    nonfinite: str = "error", input: str = "constant",
) -> torch.Tensor:
    """Present ``x`` (``[B, ...]``, direct encoding) for ``steps`` steps; return ``[T, B, K]``.

    ``input="sequence"``: ``x`` is one frame per step, ``[T, B, ...]``, and ``steps`` is ``T``
    (``None``: the sequence's length; another number is refused): frame ``t`` is the input
    current source at step ``t`` (:func:`check_sequence` lists what is refused).

    Output ``t`` is the output layer's response at step ``t`` (not yet averaged). Neuron state is
    reset before the batch. For calibrating methods (COS) the network is simulated for
    ``max(T, ρ)`` frames internally so that each layer can read its ρ pre-simulation frames; the
    first ``T`` outputs are returned. In layer mode large batches are processed in chunks of at
    most ``LAYER_MODE_FOLDED_BATCH // frames`` samples (same result, bounded memory).

    ``x`` must have the network's input shape and dtype (:func:`spikebridge.input_checks.
    check_input`, an :class:`~spikebridge.input_checks.InputError` otherwise). Samples holding
    NaN/±inf raise :class:`~spikebridge.input_checks.NonFiniteInputError`, or with
    ``nonfinite="propagate"`` get all-NaN outputs (as the ANN would) instead of the finite
    answer an IF neuron that never fires on NaN would give.
    """
    if not isinstance(snn, SpikingNetwork):
        raise TypeError(
            "simulate() needs a SpikingNetwork from spikebridge.convert(), "
            f"got {type(snn).__name__}"
        )
    if input != "constant":
        check_input_kind(input)
        return _simulate_sequence(snn, x, steps, mode, nonfinite)
    if steps is None:
        raise UsageError("simulate(snn, x, steps): a constant input needs the number of "
                         "time-steps T; only input='sequence' takes T from its frames")
    steps = check_steps(steps)
    parameter = next(snn.parameters(), None)
    nonfinite_samples = check_input(
        x, input_shape=snn.input_shape,
        channels=None if snn.input_shape is not None else infer_input_channels(snn.network),
        dtype=parameter.dtype if parameter is not None else torch.float32, nonfinite=nonfinite,
        device=parameter.device if parameter is not None else None,
    )
    check_simulation_size(snn, steps, x.shape[0], x.device)
    outputs = _simulate_chunked(snn, x, steps, mode)
    if nonfinite_samples is None:
        return outputs
    return _nan_where(nonfinite_samples, outputs)


def _nan_where(samples: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """``outputs`` ``[T, B, ...]`` with every step of the samples flagged in ``samples`` ``[B]``
    set to NaN (``nonfinite="propagate"``: what the ANN would answer)."""
    return torch.where(samples.view(1, -1, *[1] * (outputs.dim() - 2)),
                       torch.full((), math.nan, dtype=outputs.dtype, device=outputs.device),
                       outputs)


def check_input_kind(input: str) -> str:
    """``input`` if it is one of :data:`INPUT_KINDS`, else a :class:`ValueError` naming them."""
    if input not in INPUT_KINDS:
        raise ValueError(f"input must be one of {INPUT_KINDS} (an image presented at every step, "
                         f"or one frame per step [T, B, ...]), got {input!r}")
    return input


def check_sequence(
    snn: SpikingNetwork, x: object, steps: int | None, nonfinite: str = "error"
) -> tuple[int, torch.Tensor | None]:
    """Validate an input sequence ``x`` ``[T, B, ...]`` for ``snn``; return ``(T, mask)``.

    ``mask`` is ``None`` when every frame is finite, else (``nonfinite="propagate"``) the
    boolean ``[B]`` of samples with NaN/±inf in any frame.

    Raises:
        InputError: ``x`` is not a tensor of at least 3 dimensions (time, batch, features), has
            no frame, or its frames ``x[t]`` do not fit the network (checked like a constant
            input, :func:`spikebridge.input_checks.check_input`).
        NonFiniteInputError: a frame holds NaN/±inf and ``nonfinite="error"``.
        UsageError: ``steps`` is given and is not ``T``; or the method reads more input frames
            than ``T`` before its run (COS's ρ pre-simulation frames, docs/methods.md §4.5:
            a sequence needs at least ρ frames).
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f"input='sequence' takes a torch.Tensor of frames [T, B, C, H, W], got "
                         f"{type(x).__name__}")
    if x.dim() < 3:
        raise InputError(f"input='sequence' takes frames [T, B, ...] (time first, then the "
                         f"batch), got shape {list(x.shape)}")
    frames = int(x.shape[0])
    if frames == 0:
        raise InputError(f"the input sequence has no frames (shape {list(x.shape)})")
    frames = check_steps(frames, "the sequence's number of frames T")
    if steps is not None and check_steps(steps) != frames:
        raise UsageError(f"steps = {steps} but the input sequence has {frames} frames: with "
                         f"input='sequence' T is the number of frames (pass steps=None, or "
                         f"frame the events into {steps} frames)")
    parameter = next(snn.parameters(), None)
    try:
        # shape, dtype and device of one frame (the same for all: one tensor)
        check_input(x[0], input_shape=snn.input_shape,
                    channels=None if snn.input_shape is not None
                    else infer_input_channels(snn.network),
                    dtype=parameter.dtype if parameter is not None else torch.float32,
                    nonfinite="propagate",
                    device=parameter.device if parameter is not None else None)
    except InputError as error:
        raise type(error)(f"each frame x[t] of the input sequence {list(x.shape)}: "
                          f"{error}") from error
    needed = snn.frames_needed(frames)
    if needed > frames:
        raise UsageError(
            f"method {snn.method.name!r} reads the first {needed} input frames of every layer "
            f"before its run (docs/methods.md §4.5), but the input sequence has only {frames}; "
            f"present at least {needed} frames (CLI --input events: a largest --T of at least "
            f"{needed})"
        )
    bad = ~torch.isfinite(x).flatten(2).all(dim=2).all(dim=0)
    if not bool(bad.any()):
        return frames, None
    if nonfinite == "error":
        raise nonfinite_error(bad, "input sequence(s)")
    return frames, bad


def _simulate_sequence(snn: SpikingNetwork, x: torch.Tensor, steps: int | None, mode: str,
                       nonfinite: str) -> torch.Tensor:
    """``simulate(..., input="sequence")``: validate, then run in chunks of the batch."""
    check_nonfinite_policy(nonfinite)
    steps, nonfinite_samples = check_sequence(snn, x, steps, nonfinite)
    check_simulation_size(snn, steps, x.shape[1], x.device)
    mode = resolve_mode(snn, mode, x.device)
    outputs = _in_chunks(snn, x, steps, mode, 1, lambda part: _simulate_frames(snn, part, mode))
    return outputs if nonfinite_samples is None else _nan_where(nonfinite_samples, outputs)


def _simulate_frames(snn: SpikingNetwork, x: torch.Tensor, mode: str) -> torch.Tensor:
    """Run ``snn`` on frames ``x`` ``[T, B, ...]``: the prefix on every frame (step mode:
    ``x[t]``; layer-wise: all frames folded into the batch, ``[T*B, ...]``, nothing repeated)."""
    steps, batch = int(x.shape[0]), int(x.shape[1])
    split = snn.split
    # frame t: rows t·B … (t+1)·B - 1
    frames = _start_batch(snn, x.reshape(steps * batch, *x.shape[2:]), steps)

    def frame(t: int) -> torch.Tensor:
        return frames[t * batch:(t + 1) * batch]

    with torch.inference_mode():
        if mode == "step":
            return torch.stack([split.body(*split.prefix(frame(t))) for t in range(steps)])
        # layer: every frame at once; hybrid: the first ρ frames at once (calibration reads
        # them), then step by step, every neuron continuing from its state after those frames
        head = steps if mode == "layer" else min(steps, snn.frames_needed(1))
        with sequence_mode(head, batch):
            y = split.body(*split.prefix(frames[: head * batch]))
        outputs = y.view(head, batch, *y.shape[1:])
        if head == steps:
            return outputs
        tail = [split.body(*split.prefix(frame(t))) for t in range(head, steps)]
        return torch.cat([outputs, torch.stack(tail)])


def output_width(snn: SpikingNetwork) -> int:
    """Output values per sample: the last ``nn.Linear``'s width (1000 when there is none)."""
    linears = [m for m in snn.network.modules() if isinstance(m, nn.Linear)]
    return int(linears[-1].out_features) if linears else 1000


def check_simulation_size(snn: SpikingNetwork, steps: int, batch: int,
                          device: torch.device | str = "cpu") -> None:
    """Refuse, before any work, a run whose frames per layer exceed ``MAX_STEPS`` or whose
    per-step outputs would not fit in this machine's memory (:mod:`spikebridge.limits`)."""
    frames = snn.frames_needed(steps)
    if frames > MAX_STEPS:
        raise ResourceLimitError(
            f"T = {steps} makes every layer compute {frames:,} frames, above spikebridge's bound "
            f"of {MAX_STEPS:,}"
        )
    check_memory(simulation_bytes(frames, batch, output_width(snn)),
                 f"simulating T = {steps:,} steps for a batch of {batch:,}", device,
                 hint="lower T or the batch size")


def _simulate_chunked(snn: SpikingNetwork, x: torch.Tensor, steps: int, mode: str) -> torch.Tensor:
    mode = resolve_mode(snn, mode, x.device)
    return _in_chunks(snn, x, steps, mode, 0, lambda part: _simulate(snn, part, steps, mode))


def _in_chunks(snn: SpikingNetwork, x: torch.Tensor, steps: int, mode: str, batch_dim: int,
               run: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``run`` on ``x`` — or, layer-wise with more samples (along ``batch_dim``) than
    :func:`layer_chunk_size` allows, on each chunk of them, the outputs ``[T, B, ...]`` joined."""
    if mode != "step":
        chunk = layer_chunk_size(snn.frames_needed(steps if mode == "layer" else 1))
        if x.shape[batch_dim] > chunk:
            return torch.cat([run(part) for part in x.split(chunk, dim=batch_dim)], dim=1)
    return run(x)


def _start_batch(snn: SpikingNetwork, x: torch.Tensor, steps: int) -> torch.Tensor:
    """Before a batch: channels_last on CPU, in every mode — oneDNN's faster convolutions, and
    every IF layer's state in its currents' layout, updated in one fused pass
    (docs/benchmarks.md §4; this restrides one-channel input too) — then the state reset and
    the run's length told to the neurons. Returns ``x`` in the layout to feed."""
    if x.dim() == 4 and x.device.type == "cpu":
        snn.prefer_channels_last()
        x = x.to(memory_format=torch.channels_last)
    snn.reset_state()
    snn.set_horizon(steps)
    return x


def layer_chunk_size(frames: int) -> int:
    """Samples per chunk in layer-wise execution: ``frames × chunk <= LAYER_MODE_FOLDED_BATCH``."""
    return max(1, LAYER_MODE_FOLDED_BATCH // frames)


def _simulate(snn: SpikingNetwork, x: torch.Tensor, steps: int, mode: str) -> torch.Tensor:
    split = snn.split
    x = _start_batch(snn, x, steps)
    with torch.inference_mode():
        constants = split.prefix(x)
        if mode == "step":
            return torch.stack([split.body(*constants) for _ in range(steps)])
        if mode == "layer":
            return _run_layerwise(snn, constants, x.shape[0], snn.frames_needed(steps))[:steps]
        # hybrid: the first ρ frames layer-wise (calibration reads them), then step by step,
        # every neuron continuing from its state after those frames.
        head = snn.frames_needed(1)
        outputs = _run_layerwise(snn, constants, x.shape[0], head)
        if steps <= head:
            return outputs[:steps]
        tail = [split.body(*constants) for _ in range(steps - head)]
        return torch.cat([outputs, torch.stack(tail)])


def _run_layerwise(
    snn: SpikingNetwork, constants: tuple, batch: int, frames: int
) -> torch.Tensor:
    """Run the spiking body over ``frames`` steps at once; returns ``[frames, B, ...]``."""
    args = []
    for value, neuron_only in zip(constants, snn.split.neuron_only, strict=True):
        if not isinstance(value, torch.Tensor):
            raise NotImplementedError(
                "the spiking part of this network uses a non-tensor value computed from the "
                "input (e.g. x.size(0)); layer-wise execution folds time into the batch and "
                "cannot use it. Use mode='step'."
            )
        args.append(value if neuron_only else _repeat_over_time(value, frames))
    with sequence_mode(frames, batch):
        y = snn.split.body(*args)
    return y.view(frames, batch, *y.shape[1:])


def check_labels(y: object, x: object, classes: int) -> torch.Tensor:
    """The labels of a batch: an integer tensor ``[B]`` (one per image of ``x``) with values in
    ``[0, classes)``; anything else is a :class:`~spikebridge.limits.UsageError` (an
    out-of-range label would silently score 0 %)."""
    if not isinstance(y, torch.Tensor):
        raise UsageError(f"the labels must be a torch.Tensor [B] of class indices, got "
                         f"{type(y).__name__}")
    if y.device.type == "meta":
        raise UsageError("the labels are a meta tensor (shapes only, no values)")
    if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise UsageError(f"the labels must be a 1-D integer tensor [B] of class indices, got "
                         f"{y.dtype} of shape {list(y.shape)}")
    batch = x.shape[0] if isinstance(x, torch.Tensor) and x.dim() > 0 else None
    if batch is not None and y.shape[0] != batch:
        raise UsageError(f"the batch holds {batch} images but {y.shape[0]} labels")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise UsageError(f"labels must lie in [0, {classes - 1}] (the network has {classes} "
                         f"outputs), found [{int(y.min())}, {int(y.max())}]")
    return y


def correct_over_time(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Correct predictions at every step ``t`` of the running output sum (§2.6), shape ``[T]``.

    Prediction at ``t`` is :math:`\\arg\\max_k \\sum_{\\tau\\le t} y_k(\\tau)`; a sample
    whose running sum holds NaN is never counted correct (``argmax`` would pick the NaN).
    """
    running = outputs.cumsum(dim=0)
    correct = running.argmax(dim=-1) == labels.unsqueeze(0)
    return (correct & ~running.isnan().any(dim=-1)).sum(dim=1)


# The harness left the engine in 0.2 (docs/architecture.md): its old names answer, with a warning.
MOVED_IN_0_2 = {"evaluate": "spikebridge.evaluation", "Evaluation": "spikebridge.evaluation"}


__getattr__ = moved_names(__name__, MOVED_IN_0_2)
