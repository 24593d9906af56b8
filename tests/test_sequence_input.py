"""Per-step input sequences (event frames, ``input="sequence"``): engine, harness, calibration.

Oracles: step == layer == hybrid to the last bit on arbitrary frames; a sequence repeating an
image T times gives exactly the constant-input result (every registered method, calibration
included); data-based statistics on sequences equal those on their rate input; COS reads only
the first ρ frames; the harness's accuracy at t is that of the first t frames.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import spikebridge as sb
from spikebridge.activations import (
    QCFS,
    AsymmetricLeakyReLU,
    ClippedReLU,
    SlipReLU,
    SymmetricThresholdReLU,
)
from spikebridge.calibration import CalibrationData, rate_input
from spikebridge.events import EventBatchLoader, ToFrames, make_events
from spikebridge.input_checks import InputError, NonFiniteInputError
from spikebridge.limits import UsageError
from spikebridge.methods import METHODS
from spikebridge.simulate import LAYER_MODE_FOLDED_BATCH, correct_over_time

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SHAPE = (2, 8, 8)  # two polarity channels, as event frames have

ACTIVATIONS = {
    "qcfs": lambda: QCFS(levels=4, theta=1.0),
    "relu": nn.ReLU,
    "clipped_relu": lambda: ClippedReLU(theta=1.0),
    "slip": lambda: SlipReLU(levels=4, theta=1.0),
    "strelu": lambda: SymmetricThresholdReLU(theta=1.0),
    "leaky_threshold": lambda: AsymmetricLeakyReLU(theta=1.0, alpha=0.1, neg_theta=0.5),
}

# parameters that keep every method fast here: T = 4 frames >= COS's ρ
PARAMS = {"cos": {"rho": 2}, "cos-frozen": {"rho": 2}, "threshold-balancing": {"balance_steps": 4}}


class _Tiny(nn.Module):
    """conv(pad 1) → act → avgpool → conv(pad 1) → act → flatten → linear: 5 classes."""

    def __init__(self, activation) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.act1 = activation()
        self.pool = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.act2 = activation()
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(self.pool(x)))
        return self.fc(torch.flatten(x, 1))


def _model(kind: str = "qcfs", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = _Tiny(ACTIVATIONS[kind])
    with torch.no_grad():
        model.conv1.weight.mul_(2.0)  # enough current for spikes from sparse event counts
    return model.eval()


def _counts(frames: int, batch: int, seed: int = 0, rate: float = 0.3) -> torch.Tensor:
    """Event-count frames [T, B, C, H, W]: sparse non-negative integers (what ToFrames gives)."""
    g = torch.Generator().manual_seed(seed)
    shape = (frames, batch, *SHAPE)
    return ((torch.rand(shape, generator=g) < rate) * torch.randint(1, 4, shape, generator=g)
            ).float()


def _repeat(x: torch.Tensor, frames: int) -> torch.Tensor:
    return x.unsqueeze(0).expand(frames, *x.shape).contiguous()


def _convert(method: str, frames_for_calibration: torch.Tensor | None = None,
             images_for_calibration: torch.Tensor | None = None):
    kind = METHODS[method].source_kinds[0]
    params = PARAMS.get(method, {})
    calibration = None
    if METHODS[method](**params).needs_calibration_data():
        if frames_for_calibration is not None:
            calibration = CalibrationData([(frames_for_calibration, None)], samples=None,
                                          input="sequence")
        else:
            calibration = CalibrationData([(images_for_calibration, None)], samples=None)
    return sb.convert(_model(kind), method, calibration_data=calibration, **params)


def _modes(snn) -> list[str]:
    return ["layer", "hybrid"] if snn.method.needs_sequence_mode() else ["step", "layer",
                                                                         "hybrid"]


# ---------------------------------------------------------------------------------------------
# engine
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["qcfs", "cos"])
@pytest.mark.parametrize(("name", "shape"), [("fashion_cnn", (3, 1, 28, 28)),
                                             ("resnet20", (2, 3, 16, 16))])
def test_step_layer_hybrid_bit_identical_on_frames(name, shape, method):
    """Arbitrary frames: the prefix runs per frame (step) or on [T*B] (layer), same bits."""
    from spikebridge.models import create_model

    torch.manual_seed(0)
    model = create_model(name, 10, shape[1]).eval()
    for m in model.modules():
        if isinstance(m, QCFS):
            m.theta.data.uniform_(0.5, 1.5)
    snn = sb.convert(model, method, **({"rho": 2} if method == "cos" else {}))
    frames = torch.rand(4, *shape, generator=torch.Generator().manual_seed(1)) * 2
    outputs = [sb.simulate(snn, frames, input="sequence", mode=mode) for mode in _modes(snn)]
    assert outputs[0].shape == (4, shape[0], 10) and outputs[0].abs().sum() > 0
    for other in outputs[1:]:
        assert torch.equal(other, outputs[0])
    # frames that differ over time give another answer than their first frame held constant
    assert not torch.equal(outputs[0], sb.simulate(snn, frames[0], 4, mode=_modes(snn)[0]))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_repeated_sequence_equals_constant_input(method):
    """Calibrated on, and fed, an image repeated T times = calibrated on and fed the image."""
    images = _counts(1, 6, seed=2)[0]  # integer counts: their rate input is exactly the image
    x = _counts(1, 3, seed=3)[0]
    constant = _convert(method, images_for_calibration=images)
    sequence = _convert(method, frames_for_calibration=_repeat(images, 4))
    expected = sb.simulate(constant, x, 4, mode=_modes(constant)[0])
    for mode in _modes(sequence):
        assert torch.equal(sb.simulate(sequence, _repeat(x, 4), input="sequence", mode=mode),
                           expected), mode
    assert expected.abs().sum() > 0


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_calibrates_and_runs_on_event_frames(method):
    """Sequence calibration data and sequence input, every registered method, all its modes
    alike; evaluate counts its operations with the first layer charged per event."""
    frames = _counts(4, 3, seed=5)
    snn = _convert(method, frames_for_calibration=_counts(4, 6, seed=4))
    outputs = [sb.simulate(snn, frames, input="sequence", mode=mode) for mode in _modes(snn)]
    assert outputs[0].shape == (4, 3, 5) and bool(torch.isfinite(outputs[0]).all())
    for other in outputs[1:]:
        assert torch.equal(other, outputs[0])
    labels = torch.tensor([0, 1, 2])
    result = sb.evaluate(snn, [(frames, labels)], [2, 4], input="sequence")
    expected = correct_over_time(outputs[0], labels)
    if snn.horizon_dependent():  # ECC: T = 2 is its own run on the first 2 frames
        expected[1] = correct_over_time(
            sb.simulate(snn, frames[:2], input="sequence"), labels)[-1]
    for t in (2, 4):
        assert result.snn_accuracy[t] == float(expected[t - 1]) / 3
    ops = result.operations.per_T[4]
    assert ops["input_events"] == pytest.approx(float(frames.sum()) / 3)
    assert ops["snn_sops_input"] > 0 and ops["snn_sops"] >= ops["snn_sops_input"]


@settings(max_examples=12, deadline=None)
@given(frames=st.integers(1, 6), batch=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_property_modes_agree_and_repetition_is_constant_input(frames, batch, seed):
    snn = sb.convert(_model("qcfs"))
    x = _counts(frames, batch, seed=seed, rate=0.5)
    stepped = sb.simulate(snn, x, input="sequence", mode="step")
    assert torch.equal(sb.simulate(snn, x, frames, input="sequence", mode="layer"), stepped)
    assert torch.equal(sb.simulate(snn, _repeat(x[0], frames), input="sequence", mode="layer"),
                       sb.simulate(snn, x[0], frames, mode="step"))
    if frames >= 2:
        cos = sb.convert(_model("qcfs"), "cos", rho=2)
        assert torch.equal(sb.simulate(cos, x, input="sequence", mode="layer"),
                           sb.simulate(cos, x, input="sequence", mode="hybrid"))


def test_cos_calibrates_on_the_first_rho_frames_only():
    """Changing frames after ρ leaves the first ρ outputs unchanged (the calibration never read
    them); changing one of the first ρ frames changes them."""
    snn = sb.convert(_model("qcfs", seed=1), "cos", rho=3)
    frames = _counts(6, 4, seed=6, rate=0.5)
    out = sb.simulate(snn, frames, input="sequence", mode="layer")
    later = frames.clone()
    later[3:] = _counts(3, 4, seed=7, rate=0.6)
    changed_later = sb.simulate(snn, later, input="sequence", mode="layer")
    assert torch.equal(changed_later[:3], out[:3]) and not torch.equal(changed_later, out)
    earlier = frames.clone()
    earlier[2] = _counts(1, 4, seed=8, rate=0.6)[0]
    changed = sb.simulate(snn, earlier, input="sequence", mode="layer")
    assert not torch.equal(changed[:2], out[:2])  # frame 3 moved v(0): steps 1-2 differ too


def test_cos_needs_at_least_rho_frames():
    snn = sb.convert(_model("qcfs"), "cos", rho=4)
    with pytest.raises(UsageError, match="first 4 input frames.*only 3.*at least 4 frames"):
        sb.simulate(snn, _counts(3, 2), input="sequence")
    assert sb.simulate(snn, _counts(4, 2), input="sequence").shape == (4, 2, 5)


def test_large_batches_are_chunked_with_the_same_result():
    snn = sb.convert(_model("qcfs"))
    frames = 8
    batch = LAYER_MODE_FOLDED_BATCH // frames + 5  # two chunks in layer mode
    x = _counts(frames, batch, seed=9)
    assert torch.equal(sb.simulate(snn, x, input="sequence", mode="layer"),
                       sb.simulate(snn, x, input="sequence", mode="step"))


def test_bad_sequences_are_refused_with_the_problem_named():
    snn = sb.convert(_model("qcfs"))
    frames = _counts(4, 2)
    with pytest.raises(UsageError, match="steps = 3 but the input sequence has 4 frames"):
        sb.simulate(snn, frames, 3, input="sequence")
    with pytest.raises(InputError, match=r"frames \[T, B, \.\.\.\]"):
        sb.simulate(snn, frames[0, 0, 0], input="sequence")
    with pytest.raises(InputError, match="no frames"):
        sb.simulate(snn, frames[:0], input="sequence")
    with pytest.raises(InputError, match=r"each frame x\[t\].*channel"):
        sb.simulate(snn, torch.zeros(4, 2, 3, 8, 8), input="sequence")
    with pytest.raises(InputError, match=r"each frame x\[t\].*torch.float32"):
        sb.simulate(snn, frames.double(), input="sequence")
    with pytest.raises(ValueError, match="input must be one of"):
        sb.simulate(snn, frames, input="frames")
    with pytest.raises(UsageError, match="constant input needs the number of time-steps"):
        sb.simulate(snn, frames[0])
    with pytest.raises(ValueError, match="T must be an integer >= 1"):
        sb.simulate(snn, frames, 0, input="sequence")


def test_nonfinite_frames_raise_or_give_nan_outputs():
    snn = sb.convert(_model("qcfs"))
    frames = _counts(4, 3, seed=1)
    frames[2, 1, 0, 0, 0] = float("nan")  # sample 1, only in its third frame
    with pytest.raises(NonFiniteInputError, match="1 of 3 input sequence.*batch index 1"):
        sb.simulate(snn, frames, input="sequence")
    out = sb.simulate(snn, frames, input="sequence", nonfinite="propagate")
    assert bool(out[:, 1].isnan().all()) and bool(torch.isfinite(out[:, [0, 2]]).all())
    clean = frames.clone()
    clean[2, 1, 0, 0, 0] = 0.0
    assert torch.equal(out[:, [0, 2]], sb.simulate(snn, clean, input="sequence")[:, [0, 2]])


# ---------------------------------------------------------------------------------------------
# harness
# ---------------------------------------------------------------------------------------------


def test_evaluate_gives_every_t_from_one_run_and_the_ann_the_rate_input():
    model = _model("qcfs", seed=3)
    snn = sb.convert(model)
    batches = [(_counts(6, 5, seed=s, rate=0.5), torch.randint(0, 5, (5,))) for s in (1, 2)]
    result = sb.evaluate(snn, batches, [1, 3, 6], ann=model, input="sequence")
    correct = sum(correct_over_time(sb.simulate(snn, x, input="sequence"), y) for x, y in batches)
    assert result.snn_accuracy == {t: float(correct[t - 1]) / 10 for t in range(1, 7)}
    with torch.no_grad():
        ann_correct = sum(int((model(rate_input(x)).argmax(1) == y).sum()) for x, y in batches)
    assert result.ann_accuracy == ann_correct / 10
    assert result.n_samples == 10


def test_evaluate_refuses_loaders_whose_frames_are_not_max_T():
    snn = sb.convert(_model("qcfs"))
    batches = [(_counts(5, 2), torch.zeros(2, dtype=torch.long))]
    with pytest.raises(UsageError, match="yields 5 frames per sample but T = max\\(steps\\) = 4"):
        sb.evaluate(snn, batches, [2, 4], input="sequence")
    with pytest.raises(UsageError, match="must yield frames"):
        sb.evaluate(snn, [(_counts(4, 2)[0, 0, 0], torch.zeros(2, dtype=torch.long))], [4],
                    input="sequence")
    with pytest.raises(UsageError, match="batch holds 2 images but 3 labels"):
        sb.evaluate(snn, [(_counts(4, 2), torch.zeros(3, dtype=torch.long))], [4],
                    input="sequence")


def test_event_batch_loader_frames_evaluate_end_to_end():
    """Events → ToFrames → EventBatchLoader → evaluate: every event is an input event."""
    rng = np.random.default_rng(0)
    samples = []
    for label in range(6):
        n = int(rng.integers(40, 120))
        events = make_events(rng.integers(0, 8, n), rng.integers(0, 8, n),
                             np.sort(rng.integers(0, 10_000, n)), rng.integers(0, 2, n))
        samples.append((events, label % 5))
    loader = EventBatchLoader(samples, 4, ToFrames((8, 8), 5))
    snn = sb.convert(_model("qcfs"))
    result = sb.evaluate(snn, loader, [5], input="sequence")
    assert result.n_samples == 6
    total_events = sum(len(events) for events, _ in samples)
    assert result.operations.per_T[5]["input_events"] == pytest.approx(total_events / 6)
    x, y = next(iter(loader))
    assert x.shape == (5, 4, *SHAPE)
    expected = correct_over_time(sb.simulate(snn, x, input="sequence"), y)[-1]
    x2, y2 = list(loader)[1]
    expected = expected + correct_over_time(sb.simulate(snn, x2, input="sequence"), y2)[-1]
    assert result.snn_accuracy[5] == float(expected) / 6


# ---------------------------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------------------------


def test_calibration_data_cuts_sequences_along_the_batch_and_gives_rates():
    frames = _counts(4, 5, seed=3)
    data = CalibrationData([(frames, None), (frames, None)], samples=7, input="sequence")
    shown = list(data.presentations())
    assert [tuple(x.shape[:2]) for x in shown] == [(4, 5), (4, 2)]
    rates = list(data.images())
    assert torch.equal(rates[0], frames.sum(0) / 4) and rates[1].shape == (2, *SHAPE)
    with pytest.raises(ValueError, match=r"frames \[T, B, \.\.\.\]"):
        list(CalibrationData([(frames[0, 0, 0], None)], input="sequence").images())
    with pytest.raises(ValueError, match="calibration input must be one of"):
        CalibrationData([], input="events")


@pytest.mark.parametrize("method", ["maxnorm", "robustnorm", "rmp", "opi", "ecc"])
def test_data_based_statistics_use_the_rate_input(method):
    """ANN statistics on sequences are those on their rate input Σ_t x_t / T (documented)."""
    frames = _counts(5, 6, seed=11, rate=0.5)
    on_frames = _convert(method, frames_for_calibration=frames)
    on_rates = _convert(method, images_for_calibration=rate_input(frames))
    on_first = _convert(method, images_for_calibration=frames[0])
    assert on_frames.method.layer_scales == on_rates.method.layer_scales
    assert on_frames.method.layer_scales != on_first.method.layer_scales
    x = _counts(4, 3, seed=12)
    assert torch.equal(sb.simulate(on_frames, x, input="sequence"),
                       sb.simulate(on_rates, x, input="sequence"))


def test_threshold_balancing_takes_the_peak_current_of_the_first_balance_steps_frames():
    """Layer 1's threshold is its largest single-frame input current over the frames the SNN
    sees (not the rate input's), and only over the first balance_steps of them."""
    model = _model("relu", seed=4)
    frames = _counts(6, 4, seed=13, rate=0.4)
    frames[4] = 9.0  # beyond balance_steps = 3: must not count
    data = CalibrationData([(frames, None)], samples=None, input="sequence")
    snn = sb.convert(model, "threshold-balancing", calibration_data=data, balance_steps=3)
    first = next(iter(snn.neurons()))
    with torch.no_grad():
        peak = float(model.conv1(frames[:3].flatten(0, 1)).max())
        rate_peak = float(model.conv1(rate_input(frames[:3])).max())
    assert snn.method.layer_scales[first] == pytest.approx(peak, rel=1e-5)
    assert peak > rate_peak * 1.05


def test_frozen_cos_calibrates_on_the_first_rho_frames_and_needs_them():
    frames = _counts(4, 6, seed=14, rate=0.5)
    longer = torch.cat([frames[:2], _counts(3, 6, seed=15, rate=0.5)])  # same first ρ = 2
    a = _convert("cos-frozen", frames_for_calibration=frames)
    b = _convert("cos-frozen", frames_for_calibration=longer)
    for (name, na), nb in zip(a.neurons().items(), b.neurons().values(), strict=True):
        assert na.initial_state is not None, name
        assert torch.equal(na.initial_state, nb.initial_state)
    with pytest.raises(ValueError, match="first ρ = 2 frames of each calibration sequence"):
        _convert("cos-frozen", frames_for_calibration=frames[:1])


# ---------------------------------------------------------------------------------------------
# experiment layer and command line: an event data set run on its frames
# ---------------------------------------------------------------------------------------------


def _nmnist_tree(root, seed: int = 0) -> None:
    """One random recording per class and split, in N-MNIST's Train/Test/<label>/*.bin."""
    from spikebridge.events import write_nmnist_file

    rng = np.random.default_rng(seed)
    for split in ("Train", "Test"):
        for label in range(10):
            n = int(rng.integers(30, 90))
            events = make_events(rng.integers(0, 34, n), rng.integers(0, 34, n),
                                 np.sort(rng.integers(0, 300_000, n)), rng.integers(0, 2, n))
            folder = root / split / str(label)
            folder.mkdir(parents=True)
            write_nmnist_file(folder / "00001.bin", events)


def _nmnist_relu_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 8 * 8, 10)).eval()


def test_experiments_run_an_event_data_set_on_its_frames(tmp_path):
    """RunOptions(input="sequence"): test and calibration loaders give the recordings' frames,
    ECC calibrates on their rate input (= the count images the CNN trains on), and the energy
    counter charges every event of the test recordings."""
    from dataclasses import replace

    from spikebridge.data import load_dataset
    from spikebridge.data.event_sets import open_event_dataset
    from spikebridge.experiments import (
        RunOptions,
        convert_model,
        evaluate_snn,
        event_value,
        frame_loader,
    )
    from spikebridge.methods import get_method

    _nmnist_tree(tmp_path)
    config = {"dataset": "nmnist", "in_channels": 2, "input_size": [34, 34]}
    options = RunOptions(data_dir=tmp_path, input="sequence", frames=4, batch_size=4, limit=6,
                         calibration_samples=5)
    loader = frame_loader(config, "test", options)
    x, _ = next(iter(loader))
    assert x.shape == (4, 4, 2, 34, 34) and event_value(loader) == pytest.approx(4 / 255)
    ann = _nmnist_relu_model()
    snn, calibration = convert_model(ann, config, get_method("ecc"), options)
    assert calibration.sequence and calibration.samples == 5
    counts = load_dataset("nmnist", "train", tmp_path).subset(5, seed=0)
    on_counts = sb.convert(ann, "ecc", calibration_data=[(counts.images.float() / 255, None)])
    for name, scale in snn.method.layer_scales.items():
        assert scale == pytest.approx(on_counts.method.layer_scales[name], rel=1e-5)
    result = evaluate_snn(snn, loader, [2, 4], options, ann=ann)
    assert result.n_samples == 6 and set(result.snn_accuracy) == {2, 4}
    test = open_event_dataset("nmnist", "test", tmp_path)
    chosen = torch.randperm(10, generator=torch.Generator().manual_seed(0))[:6].tolist()
    events = sum(len(test[i][0]) for i in chosen)
    assert result.operations.per_T[4]["input_events"] == pytest.approx(events / 6)
    with pytest.raises(ValueError, match="fashion-mnist is not one"):
        frame_loader({**config, "dataset": "fashion-mnist"}, "test", options)
    with pytest.raises(ValueError, match=r"inputs of shape \[1, 34, 34\]"):
        frame_loader({**config, "in_channels": 1}, "test", replace(options, limit=None))


def test_cli_input_events_sets_sequence_run_options():
    from spikebridge.cli.app import build_parser
    from spikebridge.cli.runs import run_options

    parser = build_parser()
    for command in ("evaluate", "compare"):
        args = parser.parse_args([command, "--input", "events", "--T", "2,8"])
        options = run_options(args)
        assert (options.input, options.frames) == ("sequence", 8)
        plain = run_options(parser.parse_args([command, "--T", "2,8"]))
        assert (plain.input, plain.frames) == ("constant", None)
