"""The event-camera emulator and the N-MNIST tree writer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from events_oracles import as_tuples

import spikebridge.events.emulator as emulator_module
from spikebridge.events import (
    EVENT_DTYPE,
    NMNIST,
    EmulatorConfig,
    dvs_pixel_events,
    emulate_image,
    emulate_images,
    render_saccades,
    saccade_displacements,
)
from spikebridge.events import write_nmnist_dataset as write_tree


def _digit(seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((28, 28), np.uint8)
    img[6:22, 10:18] = 255
    img[8:12, 4:24] = rng.integers(80, 255, (4, 20))
    return img


def test_saccade_path_is_the_documented_triangle():
    t = np.array([0, 50_000, 100_000, 150_000, 200_000, 250_000, 300_000, 400_000])
    dx, dy = saccade_displacements(t, amplitude_px=4.0, saccade_us=100_000)
    assert dx.tolist() == [0, 1, 2, 3, 4, 2, 0, 0]
    assert dy.tolist() == [0, 2, 4, 2, 0, 0, 0, 0]


def test_render_integer_and_half_pixel_shifts():
    cfg = EmulatorConfig(canvas=(8, 8), amplitude_px=2.0, saccade_us=4, dt_us=1)
    img = np.zeros((4, 4), np.float32)
    img[1, 1] = 1.0
    frames = render_saccades(img, cfg)[0]  # offset o = (8 - 4 - 2) / 2 = 1
    assert frames.shape == (13, 8, 8)
    assert frames[0, 2, 2] == 1.0 and frames[0].sum() == pytest.approx(1.0)
    # t = 2: displacement (0.5, 1) -> the dot spreads over x = 2, 3 at y = 3
    assert frames[2, 3, 2] == pytest.approx(0.5) and frames[2, 3, 3] == pytest.approx(0.5)
    assert frames[2].sum() == pytest.approx(1.0)
    # bilinear rendering conserves the image's mass while it is inside the canvas
    assert np.allclose(frames.sum(axis=(1, 2)), 1.0, atol=1e-5)


def test_on_for_brightening_off_for_darkening():
    cfg = EmulatorConfig(dt_us=1000, refractory_us=0)
    ramp = np.linspace(0.1, 0.9, 50, dtype=np.float32)
    video = np.zeros((2, 50, 3, 3), np.float32)
    video[0] = ramp[:, None, None]
    video[1] = ramp[::-1, None, None]
    times = np.arange(50) * 1000
    up, down = dvs_pixel_events(video, times, cfg)
    assert len(up) and set(up["p"].tolist()) == {1}
    assert len(down) and set(down["p"].tolist()) == {0}
    # every pixel emits floor(log-contrast / theta) events in total
    n = math.floor((math.log(0.9 + 0.1) - math.log(0.1 + 0.1)) / 0.2 + 1e-6)
    assert len(up) == len(down) == 9 * n


def test_moving_bright_bar_has_on_leading_edge_and_off_trailing_edge():
    img = np.zeros((28, 28), np.uint8)
    img[:, 12:16] = 255
    events = emulate_image(img)
    first = events[events["t"] <= 30_000]  # first saccade moves right (and down)
    on_x = first["x"][first["p"] == 1].mean()
    off_x = first["x"][first["p"] == 0].mean()
    assert on_x > off_x


def test_no_events_for_uniform_images():
    assert len(emulate_image(np.zeros((28, 28), np.uint8))) == 0
    cfg = EmulatorConfig(canvas=(28, 28), amplitude_px=0.0)
    assert len(emulate_image(np.full((28, 28), 200, np.uint8), cfg)) == 0
    still = np.full((1, 20, 5, 5), 0.6, np.float32)
    assert len(dvs_pixel_events(still, np.arange(20) * 1000, cfg)[0]) == 0


@pytest.mark.parametrize("refractory", [0, 3000, 10_000])
def test_refractory_period_is_respected(refractory):
    cfg = EmulatorConfig(refractory_us=refractory, theta_on=0.05, theta_off=0.05)
    events = emulate_image(_digit(), cfg)
    assert len(events)
    pix = events["y"].astype(np.int64) * 34 + events["x"]
    order = np.lexsort((events["t"], pix))
    same = pix[order][1:] == pix[order][:-1]
    gaps = np.diff(events["t"][order])[same]
    assert gaps.min() >= max(refractory, cfg.dt_us)


def test_output_format_and_determinism():
    img = _digit()
    events = emulate_image(img)
    assert events.dtype == EVENT_DTYPE and len(events) > 500
    assert np.all(np.diff(events["t"]) >= 0)
    assert events["x"].max() < 34 and events["y"].max() < 34 and events["t"].max() <= 300_000
    assert {0, 1} == set(np.unique(events["p"]).tolist())
    assert np.array_equal(events, emulate_image(img))
    batch = emulate_images(np.stack([img, _digit(1), np.zeros((28, 28), np.uint8)]))
    assert np.array_equal(batch[0], events) and len(batch[2]) == 0
    noisy = EmulatorConfig(threshold_sigma=0.2, seed=5)
    a, b = emulate_image(img, noisy, image_id=3), emulate_image(img, noisy, image_id=4)
    assert not np.array_equal(a, b) and np.array_equal(a, emulate_image(img, noisy, image_id=3))


def test_write_nmnist_tree_reads_back(tmp_path):
    imgs = np.stack([_digit(i) for i in range(7)])
    labels = np.array([0, 3, 3, 9, 1, 0, 3])
    calls = []
    root = write_tree(
        tmp_path / "fmnist-events",
        (imgs[:5], labels[:5]),
        (imgs[5:], labels[5:]),
        batch_size=2,
        progress=lambda *a: calls.append(a),
    )
    assert calls[-1] == ("test", 2, 2) and ("train", 5, 5) in calls
    assert (root / "Train" / "3" / "00002.bin").is_file()
    assert (root / "Test" / "3" / "00002.bin").is_file()
    train, test = NMNIST(root, "train"), NMNIST(root, "test")
    assert sorted(train.labels().tolist()) == sorted(labels[:5].tolist())
    for i in range(len(train)):
        idx = int(train.source(i).stem) - 1
        events, label = train[i]
        assert label == labels[idx]
        assert as_tuples(events) == as_tuples(emulate_image(imgs[idx], image_id=idx))
    assert len(test) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["fmnist-events"]


def test_write_nmnist_tree_is_atomic(tmp_path, monkeypatch):
    imgs = np.stack([_digit(i) for i in range(4)])
    written = []

    def failing_write(path, events):
        if len(written) == 2:
            raise OSError("disk full")
        written.append(path)
        path.write_bytes(b"")

    monkeypatch.setattr(emulator_module, "write_nmnist_file", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_tree(tmp_path / "tree", (imgs, np.array([1, 2, 3, 4])))
    assert list(tmp_path.iterdir()) == []  # neither the tree nor a temporary folder remains
    (tmp_path / "tree").mkdir()
    with pytest.raises(FileExistsError):
        write_tree(tmp_path / "tree", (imgs, np.array([1, 2, 3, 4])))
    with pytest.raises(ValueError, match="0..9"):
        write_tree(tmp_path / "other", (imgs, np.array([1, 2, 3, 10])))
    assert not (tmp_path / "other").exists()
