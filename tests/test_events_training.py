"""Event-camera datasets in the training registry: the records, the count images the CNN trains on
(against a numpy oracle), the frames an SNN takes, augmentation of event samples, VGG-7, the ECC
DVS recipe, and `spikebridge train --dataset nmnist` end to end on a tiny emulated N-MNIST."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from events_oracles import (
    aedat31_packet,
    dvs128_address,
    spikingjelly_events,
    write_aedat2,
    write_aedat31,
    write_nmnist,
)

from spikebridge.activations import ActivationSpec
from spikebridge.cli import main
from spikebridge.data import BatchLoader, list_datasets, load_dataset
from spikebridge.data.errors import DatasetNotFoundError
from spikebridge.data.event_sets import event_dataset_names, event_loader, open_event_dataset
from spikebridge.data.registry import dataset_info
from spikebridge.events import (
    CIFAR10DVS,
    CIFAR10DVS_CLASSES,
    EventAugmentation,
    EventBatchLoader,
    EventDataset,
    augment_event_batch,
    flip_events,
    make_events,
    shift_events,
    to_frames,
    write_nmnist_dataset,
)
from spikebridge.models import create_model
from spikebridge.recipes import RecipeError, load_recipe

EVENT_SETS = ["cifar10-dvs", "dvs-gesture", "nmnist"]


def _counts_oracle(events, sensor, out, t0=None, window=None):
    """Per-pixel, per-polarity counts [2, H', W'] with a Python loop (no spikebridge code)."""
    (w, h), (ow, oh) = sensor, out
    counts = np.zeros((2, oh, ow), dtype=np.int64)
    start = min(t for _, _, t, _ in events) if events else 0
    for x, y, t, p in events:
        if window is not None and not start <= t < start + window:
            continue
        counts[p, y * oh // h, x * ow // w] += 1
    return counts


# -- the registry records ---------------------------------------------------------------------
def test_event_sets_are_registered_with_their_defaults():
    assert event_dataset_names() == EVENT_SETS
    assert set(EVENT_SETS) <= set(list_datasets())
    facts = {  # name: (classes, image size, sensor, window µs, frames, flip, crop padding)
        "nmnist": (10, (34, 34), (34, 34), None, 30, False, 2),
        "cifar10-dvs": (10, (42, 42), (128, 128), 1_300_000, 48, True, 4),
        "dvs-gesture": (11, (64, 64), (128, 128), None, 60, False, 4),
    }
    for name, (classes, size, sensor, window, frames, flip, padding) in facts.items():
        info = dataset_info(name)
        assert (info.num_classes, info.image_size, info.channels) == (classes, size, 2)
        assert (info.storage, info.crop_padding, info.horizontal_flip) == ("memory", padding, flip)
        assert info.mean == (0.0, 0.0) and info.std == (1.0, 1.0)  # counts / 255
        ev = info.events
        assert (ev.sensor_size, ev.window_us, ev.frames, ev.polarity, ev.count_scale) == (
            sensor, window, frames, "split", 255.0)
        assert str(frames) in info.test_transform
    assert "seeded random 9:1" in dataset_info("cifar10-dvs").events.split
    assert dataset_info("cifar10").events is None and dataset_info("cifar10").horizontal_flip
    with pytest.raises(ValueError, match="not an event-camera dataset; those are cifar10-dvs"):
        event_loader("mnist")


def test_info_lists_the_event_sets_and_the_ecc_recipe(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name, line in [("nmnist", "10 classes, 2x34x34, memory"),
                       ("cifar10-dvs", "10 classes, 2x42x42, memory"),
                       ("dvs-gesture", "11 classes, 2x64x64, memory")]:
        assert f"  {name:<16} {line}" in out
    assert "the first 1.3 s (128x128 -> 42x42)" in out
    assert "SNN: 48 frames of that window; split: no official split" in out
    assert "cifar10-dvs-vgg7" in out and "ECC κ = 100, η = 0.5, T = 48" in out


# -- count images (the CNN input) -------------------------------------------------------------
def _nmnist_fixture(root, per_class=2, seed=0, saturate=False):
    """A Train/Test tree of random events; with ``saturate`` the first file has 300 events on one
    pixel (more than the uint8 count holds)."""
    rng = np.random.default_rng(seed)
    written = {"train": [], "test": []}
    for split, folder in (("train", "Train"), ("test", "Test")):
        for label in range(10):
            for i in range(per_class):
                n = int(rng.integers(5, 60))
                ev = [(int(rng.integers(0, 34)), int(rng.integers(0, 34)), int(t),
                       int(rng.integers(0, 2))) for t in np.sort(rng.integers(0, 300_000, n))]
                if saturate and not written[split]:
                    ev = [(7, 3, 1000 + k, 1) for k in range(300)] + ev[:5]
                    ev.sort(key=lambda e: e[2])
                write_nmnist(root / folder / str(label) / f"{i + 1:05d}.bin", ev)
                written[split].append((ev, label))
    return written


def test_nmnist_count_images_equal_the_oracle_and_saturate_at_255(tmp_path):
    written = _nmnist_fixture(tmp_path, saturate=True)
    train = load_dataset("nmnist", "train", tmp_path)
    assert train.images.dtype == torch.uint8 and train.images.shape == (20, 2, 34, 34)
    assert train.name == "nmnist" and train.classes == tuple("0123456789")
    assert train.labels.tolist() == [label for _, label in written["train"]]
    for i, (ev, _) in enumerate(written["train"]):
        expected = np.minimum(_counts_oracle(ev, (34, 34), (34, 34)), 255)
        assert np.array_equal(train.images[i].numpy(), expected), i
    assert int(train.images[0, 1, 3, 7]) == 255  # 300 events, saturated
    # the CNN input: min(count, 255) / 255 — BatchLoader's normalisation with the record's std
    x, _ = next(iter(BatchLoader(train, 20)))
    assert torch.allclose(x, train.images.float() / 255.0)
    assert load_dataset("nmnist", "test", tmp_path).labels.shape == (20,)


def _cifar_fixture(root, per_class=10, seed=1):
    """AEDAT 2.0 files in the ten class folders, events over 2 s (the window keeps 1.3 s)."""
    rng = np.random.default_rng(seed)
    decoded = {}
    for c in CIFAR10DVS_CLASSES:
        for i in range(per_class):
            n = int(rng.integers(50, 120))
            t = np.sort(rng.integers(0, 2_000_000, n)) + 5_000  # not starting at 0
            records = [(dvs128_address(int(rng.integers(0, 128)), int(rng.integers(0, 128)),
                                       int(rng.integers(0, 2))), int(tt)) for tt in t]
            path = write_aedat2(root / c / f"cifar10_{c}_{i}.aedat", records)
            decoded[path.name] = spikingjelly_events(records)
    return decoded


def test_cifar10dvs_counts_are_the_first_1_3_s_binned_to_42x42(tmp_path):
    decoded = _cifar_fixture(tmp_path)
    test = load_dataset("cifar10-dvs", "test", tmp_path)
    assert test.images.shape == (10, 2, 42, 42)  # one test file per class (9:1)
    source = open_event_dataset("cifar10-dvs", "test", tmp_path)
    for i in range(len(source)):
        ev = decoded[source.source(i).name]
        expected = _counts_oracle(ev, (128, 128), (42, 42), window=1_300_000)
        assert expected.sum() < len(ev)  # the window did drop late events
        assert np.array_equal(test.images[i].numpy(), expected)


def test_a_split_left_empty_is_named_not_reported_as_missing_files(tmp_path):
    _cifar_fixture(tmp_path, per_class=2)  # ceil(0.9 * 2) = 2: every file goes to training
    assert len(load_dataset("cifar10-dvs", "train", tmp_path)) == 20
    with pytest.raises(DatasetNotFoundError, match=r"split leaves no test recordings among "
                       r"the 20 files \(train fraction 0.9 per class\): add recordings"):
        load_dataset("cifar10-dvs", "test", tmp_path)


def test_cifar10dvs_split_is_a_seeded_random_9_to_1_per_class(tmp_path):
    _cifar_fixture(tmp_path, per_class=20)
    names = {split: [open_event_dataset("cifar10-dvs", split, tmp_path).source(i).name
                     for i in range(len(open_event_dataset("cifar10-dvs", split, tmp_path)))]
             for split in ("train", "test")}
    assert len(names["train"]) == 180 and len(names["test"]) == 20
    assert set(names["train"]).isdisjoint(names["test"])
    assert len(set(names["train"]) | set(names["test"])) == 200
    for c in CIFAR10DVS_CLASSES:  # 18 + 2 of every class
        assert sum(n.startswith(f"cifar10_{c}_") for n in names["test"]) == 2
    # the record's split is CIFAR10DVS(split_scheme="random", split_seed=0): reproducible, and
    # not the first-files split
    again = CIFAR10DVS(tmp_path, "test", split_scheme="random", split_seed=0)
    assert [again.source(i).name for i in range(len(again))] == names["test"]
    first = CIFAR10DVS(tmp_path, "test", split_scheme="first")
    assert [first.source(i).name for i in range(len(first))] != names["test"]
    other = CIFAR10DVS(tmp_path, "test", split_scheme="random", split_seed=1)
    assert [other.source(i).name for i in range(len(other))] != names["test"]


def test_dvs_gesture_counts_are_each_labelled_window_binned_to_64x64(tmp_path):
    rng = np.random.default_rng(2)
    ev = [(int(rng.integers(0, 128)), int(rng.integers(0, 128)), int(t), int(rng.integers(0, 2)))
          for t in np.sort(rng.integers(0, 3_000_000, 400))]
    for user in ("user01", "user24"):
        write_aedat31(tmp_path / f"{user}_led.aedat",
                      [aedat31_packet(ev[k:k + 50]) for k in range(0, 400, 50)])
        (tmp_path / f"{user}_led_labels.csv").write_text(
            "class,startTime_usec,endTime_usec\n3,100000,1200000\n9,1500000,2900000\n")
    train = load_dataset("dvs-gesture", "train", tmp_path)  # users 01..23 (no lists: the names)
    assert train.images.shape == (2, 2, 64, 64) and train.labels.tolist() == [2, 8]
    for i, (start, end) in enumerate([(100_000, 1_200_000), (1_500_000, 2_900_000)]):
        window = [e for e in ev if start <= e[2] < end]
        assert np.array_equal(train.images[i].numpy(),
                              _counts_oracle(window, (128, 128), (64, 64)))
    assert len(load_dataset("dvs-gesture", "test", tmp_path)) == 2


def test_missing_event_data_names_every_place_searched(tmp_path, monkeypatch):
    monkeypatch.delenv("SPIKEBRIDGE_DATA_DIR", raising=False)
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_dataset("nmnist", "train", tmp_path)
    message = str(excinfo.value)
    assert f"{tmp_path / 'nmnist'} (no such directory)" in message
    assert "no Train/ folder" in message and "Train.zip" in message and "--data-dir" in message
    (tmp_path / "airplane").mkdir()
    with pytest.raises(DatasetNotFoundError, match="missing class folder.*automobile"):
        load_dataset("cifar10-dvs", "test", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="no directory to search"):
        load_dataset("dvs-gesture", "train")
    monkeypatch.setenv("SPIKEBRIDGE_DATA_DIR", str(tmp_path))
    _nmnist_fixture(tmp_path / "nmnist", per_class=1)  # DIR/<name> is found too
    assert len(load_dataset("nmnist", "test")) == 10


# -- frames (the SNN input) -------------------------------------------------------------------
def test_frames_average_to_the_count_image_the_cnn_sees(tmp_path):
    _cifar_fixture(tmp_path, per_class=10)
    frames, labels = next(iter(event_loader("cifar10-dvs", "test", tmp_path, batch_size=4)))
    assert frames.shape == (48, 4, 2, 42, 42) and frames.dtype == torch.float32
    counts, same = next(iter(event_loader("cifar10-dvs", "test", tmp_path, batch_size=4,
                                          representation="counts")))
    assert counts.shape == (4, 2, 42, 42) and torch.equal(labels, same)
    assert torch.allclose(frames.mean(dim=0), counts, atol=1e-6)
    cnn = load_dataset("cifar10-dvs", "test", tmp_path)
    x, _ = next(iter(BatchLoader(cnn, 4)))
    assert torch.allclose(counts, x, atol=1e-6)
    # a frame holds the counts of its 1.3 s / 48 slice, times 48 / 255
    source = open_event_dataset("cifar10-dvs", "test", tmp_path)
    ev, _ = source[0]
    raw = to_frames(ev, (128, 128), 48, t_start=int(ev["t"].min()),
                    t_end=int(ev["t"].min()) + 1_300_000, out_size=(42, 42))
    assert torch.allclose(frames[:, 0], raw * 48 / 255)
    few = next(iter(event_loader("cifar10-dvs", "test", tmp_path, batch_size=2, frames=6)))[0]
    assert few.shape == (6, 2, 2, 42, 42)
    with pytest.raises(ValueError, match="frames must be an integer >= 1"):
        event_loader("cifar10-dvs", "test", tmp_path, frames=0)


# -- augmentation -----------------------------------------------------------------------------
def _random_events(n, size, seed):
    rng = np.random.default_rng(seed)
    return make_events(rng.integers(0, size[0], n), rng.integers(0, size[1], n),
                       np.sort(rng.integers(0, 100_000, n)), rng.integers(0, 2, n))


@pytest.mark.parametrize(("sensor", "out"), [((34, 34), None), ((128, 128), (64, 64))])
def test_a_flip_of_the_events_is_the_flip_of_their_frames(sensor, out):
    ev = _random_events(3000, sensor, seed=3)
    frames = to_frames(ev, sensor, 5, out_size=out)
    assert torch.equal(to_frames(flip_events(ev, sensor), sensor, 5, out_size=out),
                       frames.flip(-1))
    assert frames.sum() == 3000 and not torch.equal(frames, frames.flip(-1))


def test_augmentation_is_one_transform_per_sample_for_all_its_frames():
    sensor, padding, steps = (34, 34), 3, 6

    def frames(events):  # one fixed window, so dropping events never moves the time bins
        return to_frames(events, sensor, steps, t_start=0, t_end=100_000)

    samples = [_random_events(800, sensor, seed=s) for s in range(5)]
    batch = torch.stack([frames(e) for e in samples], dim=1)  # [T, B, C, H, W]
    out = augment_event_batch(batch, torch.Generator().manual_seed(7), padding=padding, flip=True)
    assert out.shape == batch.shape
    chosen = set()
    for b, ev in enumerate(samples):
        # the oracle, on the events: a crop at offset (dy, dx) of the padded frames is a shift of
        # the events by (padding - dx, padding - dy), dropping those that leave the sensor
        found = []
        for dy, dx, flip in itertools.product(range(2 * padding + 1), range(2 * padding + 1),
                                              (False, True)):
            moved = shift_events(ev, sensor, padding - dx, padding - dy)
            if torch.equal(out[:, b], frames(flip_events(moved, sensor) if flip else moved)):
                found.append((dy, dx, flip))
        assert len(found) == 1, (b, found)  # one transform explains all T frames of the sample
        chosen.add(found[0])
    assert len(chosen) > 1  # samples get their own draws
    # the same draws as the count-image augmentation of the CNN: frame k of the augmented batch
    # is the augmented batch of frame k
    for k in range(steps):
        alone = augment_event_batch(batch[k], torch.Generator().manual_seed(7), padding=padding,
                                    flip=True)
        assert torch.equal(out[k], alone)


def test_event_loader_augmentation_is_seeded_and_reproducible(tmp_path):
    _nmnist_fixture(tmp_path, per_class=1)
    dataset = open_event_dataset("nmnist", "train", tmp_path)
    frames = event_loader("nmnist", "train", tmp_path).transform

    def epochs(seed):
        loader = EventBatchLoader(dataset, 4, frames, shuffle=True, seed=seed,
                                  augment=EventAugmentation(padding=2, flip=True))
        return [torch.cat([x for x, _ in loader], dim=1) for _ in range(2)]

    a, b = epochs(0), epochs(0)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0], epochs(1)[0])
    plain = torch.cat([x for x, _ in EventBatchLoader(dataset, 4, frames)], dim=1)
    assert a[0].sum() <= plain.sum()  # crops only drop events
    aug = event_loader("nmnist", "train", tmp_path, augment=True)
    assert aug.augment == EventAugmentation(padding=2, flip=False)  # the record's: no flip


# -- VGG-7 ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("channels", "size", "classes"), [
    (2, 42, 10),   # CIFAR10-DVS, the ECC setting
    (2, 34, 10),   # N-MNIST
    (2, 64, 11),   # DVS Gesture, the registry's binning
    (2, 128, 11),  # DVS Gesture, full resolution
    (1, 42, 10),   # summed polarities
])
def test_vgg7_takes_every_event_input(channels, size, classes):
    torch.manual_seed(0)
    model = create_model("vgg7", num_classes=classes, in_channels=channels,
                         activation=ActivationSpec("relu")).eval()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [64, 128, 128, 256, 256] and len(linears) == 2
    assert convs[0].in_channels == channels
    assert sum(isinstance(m, torch.nn.ReLU) for m in model.modules()) == 6
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    x = torch.rand(2, channels, size, size)
    with torch.no_grad():
        assert model(x).shape == (2, classes)
        before_pool = model.features[:-1](x)
    expected = size // 2 // 2 // 2
    assert before_pool.shape == (2, 256, expected, expected)
    if size == 42:  # the plain layout: the features are 5×5 already, the adaptive pool is a no-op
        assert torch.equal(model.features[-1](before_pool), before_pool)


# -- the ECC DVS recipe -----------------------------------------------------------------------
def test_the_ecc_dvs_recipe_validates():
    recipe = load_recipe("cifar10-dvs-vgg7")
    assert (recipe.family, recipe.architecture, recipe.dataset) == ("ecc", "vgg7", "cifar10-dvs")
    assert recipe.steps == (48,) and recipe.steps[0] == dataset_info("cifar10-dvs").events.frames
    assert (recipe.kappa, recipe.eta, recipe.levels, recipe.rho) == (100.0, 0.5, None, None)
    assert recipe.paper["ecc"].ann == 73.30 and recipe.paper["ecc"].accuracy == {48: 71.20}
    assert recipe.methods == ("ecc",)
    cfg = recipe.train_config(epochs=1)
    assert cfg.activation == ActivationSpec("relu") and cfg.dataset == "cifar10-dvs"
    assert cfg.epochs == 1 and cfg.crop_padding == 4 and cfg.recipe == "cifar10-dvs-vgg7"
    assert "filled in by us" in recipe.notes


def test_reproduce_runs_the_ecc_dvs_row_on_event_frames(tmp_path, capsys):
    """``train --recipe cifar10-dvs-vgg7`` then ``reproduce``: ECC with the recipe's κ and η,
    calibrated on training recordings, the SNN on the test recordings' frames; the printed and
    written record hold ours beside the paper's; memory neurons on request; a model that is
    not the recipe's is refused by name."""
    from spikebridge.recipes import load_recipe as recipe_named
    from spikebridge.reproduce import reproduce

    data = tmp_path / "data"
    _cifar_fixture(data, per_class=10)  # 9:1 per class: 90 training, 10 test recordings
    model = tmp_path / "vgg7"
    assert main(["train", "--recipe", "cifar10-dvs-vgg7", "--data-dir", str(data), "--epochs",
                 "1", "--batch-size", "12", "--out", str(model), "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "row.json"
    assert main(["reproduce", "--recipe", "cifar10-dvs-vgg7", "--model", str(model),
                 "--data-dir", str(data), "--calibration-samples", "8", "--json", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "10 test recordings, 48 event frames each, ECC κ = 100, η = 0.5, IF neurons" in printed
    assert "ECC paper" in printed and "71.20" in printed and "73.30" in printed
    record = json.loads(out.read_text())
    assert (record["family"], record["input"], record["frames"]) == ("ecc", "sequence", 48)
    assert record["calibration_samples"] == 8 and record["images"] == 10
    assert record["ecc"]["paper"] == {"48": 71.20} and record["T"] == [48]
    assert record["ecc"]["gap"]["48"] == pytest.approx(record["ecc"]["ours"]["48"] - 71.20)
    assert record["ann"]["paper"] == {"ecc": 73.30}
    # through the API, with memory neurons and 4 frames: its own label, the same ANN accuracy
    signed = reproduce(recipe_named("cifar10-dvs-vgg7"), model, steps=[4], data_dir=data,
                       calibration_samples=8, neuron="memory")
    assert signed["labels"] == {"ecc": "ecc+memory"} and signed["frames"] == 4
    assert signed["ecc"]["paper"] == {4: None} and signed["ecc"]["gap"] == {4: None}
    assert signed["ann"]["ours"] == pytest.approx(record["ann"]["ours"])
    qcfs = tmp_path / "qcfs"
    assert main(["train", "--recipe", "cifar10-dvs-vgg7", "--activation", "qcfs:L=4",
                 "--data-dir", str(data), "--epochs", "1", "--batch-size", "12", "--out",
                 str(qcfs), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["reproduce", "--recipe", "cifar10-dvs-vgg7", "--model", str(qcfs),
                 "--data-dir", str(data)]) == 2
    assert "activation 'qcfs' (the recipe's: 'relu')" in capsys.readouterr().err


@pytest.mark.parametrize(("edit", "message"), [
    ("activation = \"relu\"", "'activation' must be 'relu'"),
    ("kappa = 100.0", "'kappa' must be > 0"),
    ("\neta = 0.5", "'eta' must be in [0, 1)"),
    ("family = \"ecc\"", "'family' must be one of cos, ecc"),
    ("[paper.ecc]", "unknown field(s) 'qcfs'"),
])
def test_bad_ecc_recipe_fields_are_named(tmp_path, edit, message):
    from spikebridge.recipes import RECIPE_DIR

    text = (RECIPE_DIR / "cifar10-dvs-vgg7.toml").read_text()
    replacement = {"activation = \"relu\"": "activation = \"qcfs\"", "kappa = 100.0": "kappa = 0.0",
                   "\neta = 0.5": "\neta = 1.0", "family = \"ecc\"": "family = \"snn\"",
                   "[paper.ecc]": "[paper.qcfs]"}[edit]
    assert edit in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(edit, replacement, 1))
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(path)
    assert message in str(excinfo.value) and "bad.toml" in str(excinfo.value)


# -- training on the counts, end to end -------------------------------------------------------
def _bars(n, seed):
    """28×28 images of class k: a bright bar at a class-dependent place (emulator input)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = np.zeros((n, 28, 28), np.uint8)
    for i, k in enumerate(labels):
        row = 4 + 2 * int(k) + int(rng.integers(0, 2))
        images[i, row:row + 3, 4:24] = 230
    return images, labels


@pytest.fixture(scope="module")
def emulated_nmnist(tmp_path_factory):
    root = tmp_path_factory.mktemp("events") / "nmnist"
    return write_nmnist_dataset(root, _bars(32, 0), _bars(16, 1))


def test_train_dataset_nmnist_from_the_command_line(emulated_nmnist, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--dataset", "nmnist", "--data-dir", str(emulated_nmnist.parent),
               "--model", "vgg7", "--activation", "relu", "--epochs", "1", "--batch-size", "16",
               "--out", str(out), "--quiet"])
    assert rc == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["dataset"], config["architecture"], config["in_channels"]) == (
        "nmnist", "vgg7", 2)
    assert config["input_size"] == [34, 34] and config["num_classes"] == 10
    assert config["normalization"] == {"mean": [0.0, 0.0], "std": [1.0, 1.0]}
    assert config["epochs_completed"] == 1 and 0.0 <= config["test_accuracy"] <= 1.0
    test = load_dataset("nmnist", "test", emulated_nmnist.parent)
    assert config["test_fingerprint"] == test.fingerprint() and len(test) == 16
    assert "wrote" in capsys.readouterr().out


def test_the_default_fashion_cnn_trains_on_nmnist_and_runs_on_its_frames(emulated_nmnist,
                                                                       tmp_path):
    """Regression: ``fashion_cnn`` refused 34×34 input ("divisible by 4"), so the default
    ``spikebridge train --dataset nmnist`` failed; its pools now floor (34 → 17 → 8)."""
    import spikebridge as sb
    from spikebridge.checkpoint import load_checkpoint

    out = tmp_path / "run"
    assert main(["train", "--dataset", "nmnist", "--data-dir", str(emulated_nmnist.parent),
                 "--epochs", "1", "--batch-size", "16", "--out", str(out), "--quiet"]) == 0
    ann, config = load_checkpoint(out)
    assert (config["architecture"], config["input_size"]) == ("fashion_cnn", [34, 34])
    frames, _ = next(iter(event_loader("nmnist", "test", emulated_nmnist.parent, frames=4,
                                       batch_size=3)))
    snn = sb.convert(ann, "qcfs")
    assert sb.simulate(snn, frames, input="sequence").shape == (4, 3, 10)


def test_training_never_flips_a_set_whose_record_forbids_it(emulated_nmnist, tmp_path,
                                                            monkeypatch):
    import spikebridge.train as train_module
    from spikebridge.train import TrainConfig, train

    seen = {}

    class Stop(Exception):
        pass

    def capture(dataset, batch_size, **kwargs):
        seen.update(kwargs, dataset=dataset)
        raise Stop

    monkeypatch.setattr(train_module, "training_loader", capture)
    cfg = TrainConfig(architecture="vgg7", dataset="nmnist", activation=ActivationSpec("relu"),
                      epochs=1, batch_size=8)
    assert cfg.horizontal_flip  # the default; the N-MNIST record says no
    with pytest.raises(Stop):
        train(cfg, tmp_path / "m", data_dir=emulated_nmnist.parent, progress=False,
              log=lambda _m: None)
    assert seen["horizontal_flip"] is False and seen["crop_padding"] == 2
    assert isinstance(seen["dataset"].images, torch.Tensor) and len(seen["dataset"]) == 32
    assert not isinstance(seen["dataset"], EventDataset)


def test_compare_and_convert_with_memory_neurons_on_event_frames(emulated_nmnist, tmp_path,
                                                                capsys):
    """``--neuron memory`` from the command line: compare labels and records it, convert saves
    it, the saved SNN reproduces compare's accuracies, and --snn refuses to re-choose it."""
    import spikebridge as sb

    data = str(emulated_nmnist.parent)
    model = tmp_path / "relu"
    assert main(["train", "--dataset", "nmnist", "--data-dir", data, "--activation", "relu",
                 "--epochs", "1", "--batch-size", "16", "--out", str(model), "--quiet"]) == 0
    common = ["--input", "events", "--T", "2,4", "--data-dir", data, "--quiet"]
    assert main(["compare", "--model", f"relu={model}", "--methods", "ecc:tre=0,maxnorm",
                 "--neuron", "memory", "--calibration-samples", "8", "--out",
                 str(tmp_path / "cmp"), *common]) == 0
    records = json.loads((tmp_path / "cmp" / "results.json").read_text())["results"]
    assert [r["label"] for r in records] == ["ecc(tre=False)+memory", "maxnorm+memory"]
    assert all(r["neuron"] == "memory" and r["spikes"]["signed"] for r in records)
    snn_dir = tmp_path / "snn"
    assert main(["convert", "--model", str(model), "--method", "ecc:tre=0", "--neuron",
                 "memory", "--data-dir", data, "--calibration-samples", "8", "--out",
                 str(snn_dir), "--quiet"]) == 0
    assert all(n.memory for n in sb.load_snn(snn_dir).neurons().values())
    assert main(["evaluate", "--snn", str(snn_dir), "--json", str(tmp_path / "ev.json"),
                 *common]) == 0
    saved = json.loads((tmp_path / "ev.json").read_text())
    assert saved["label"].startswith("ecc(") and saved["label"].endswith("+memory")
    assert saved["neuron"] == "memory"
    assert saved["snn_accuracy"] == records[0]["snn_accuracy"]
    capsys.readouterr()
    assert main(["evaluate", "--snn", str(snn_dir), "--neuron", "memory", *common]) == 2
    assert "--neuron do(es) not apply with --snn" in capsys.readouterr().err
    qcfs = tmp_path / "qcfs"
    assert main(["train", "--dataset", "nmnist", "--data-dir", data, "--activation", "qcfs:L=4",
                 "--epochs", "1", "--batch-size", "16", "--out", str(qcfs), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["compare", "--model", f"qcfs={qcfs}", "--methods", "qcfs,cos", "--neuron",
                 "memory", *common]) == 2
    assert "method 'cos' cannot use signed neurons with memory" in capsys.readouterr().err


def test_event_runs_check_the_test_fingerprint_of_the_count_images(emulated_nmnist, tmp_path,
                                                                    capsys):
    """--input events refuses another copy of the test recordings under the same name (the
    checkpoint's fingerprint is of the count images), unless --ignore-data-mismatch."""
    model = tmp_path / "relu"
    assert main(["train", "--dataset", "nmnist", "--data-dir", str(emulated_nmnist.parent),
                 "--activation", "relu", "--epochs", "1", "--batch-size", "16", "--out",
                 str(model), "--quiet"]) == 0
    other = write_nmnist_dataset(tmp_path / "other" / "nmnist", _bars(32, 0), _bars(16, 5))
    run = ["evaluate", "--model", str(model), "--method", "ecc", "--input", "events", "--T",
           "4", "--data-dir", str(other.parent), "--calibration-samples", "8", "--quiet"]
    capsys.readouterr()
    assert main(run) == 2
    assert "SHA-256 fingerprint differs" in capsys.readouterr().err
    assert main([*run, "--ignore-data-mismatch"]) == 0
    assert main([*run[:-5], "--data-dir", str(emulated_nmnist.parent), "--quiet"]) == 0
