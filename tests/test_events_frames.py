"""Dense representations of events (frames, counts, down-scaling) and the denoising filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikebridge.events import (
    ToCounts,
    ToFrames,
    background_activity_filter,
    downscale_events,
    make_events,
    to_counts,
    to_frames,
)

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def event_streams(draw, max_w=40, max_h=40, max_n=200):
    w = draw(st.integers(1, max_w))
    h = draw(st.integers(1, max_h))
    n = draw(st.integers(0, max_n))
    x = draw(st.lists(st.integers(0, w - 1), min_size=n, max_size=n))
    y = draw(st.lists(st.integers(0, h - 1), min_size=n, max_size=n))
    t = sorted(draw(st.lists(st.integers(0, 2_000_000), min_size=n, max_size=n)))
    p = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    return make_events(np.array(x, int), np.array(y, int), np.array(t, int), np.array(p, int)), (
        w,
        h,
    )


def _reference_frames(events, size, frame_of, channels):
    """np.add.at oracle: counts per (frame, channel, y, x) for the events with frame_of >= 0."""
    w, h = size
    n_frames = int(frame_of.max()) + 1 if frame_of.size and frame_of.max() >= 0 else 1
    out = np.zeros((n_frames, channels, h, w))
    keep = frame_of >= 0
    c = events["p"][keep] if channels == 2 else np.zeros(keep.sum(), int)
    np.add.at(out, (frame_of[keep], c, events["y"][keep], events["x"][keep]), 1)
    return out


@SETTINGS
@given(stream=event_streams(), n_frames=st.integers(1, 12))
def test_time_frames_count_every_event_and_match_oracle(stream, n_frames):
    events, size = stream
    frames = to_frames(events, size, n_frames)
    assert frames.shape == (n_frames, 2, size[1], size[0]) and frames.dtype == torch.float32
    assert frames.sum().item() == len(events)
    if len(events):
        t = events["t"].astype(np.int64)
        t0, t1 = t.min(), t.max() + 1
        k = (t - t0) * n_frames // (t1 - t0)
        ref = np.zeros((n_frames, 2, size[1], size[0]))
        np.add.at(ref, (k, events["p"], events["y"], events["x"]), 1)
        assert np.array_equal(frames.numpy(), ref)
    summed = to_frames(events, size, n_frames, polarity="sum")
    assert torch.equal(summed, frames.sum(dim=1, keepdim=True))


@SETTINGS
@given(stream=event_streams(), n_frames=st.integers(1, 12))
def test_count_frames_have_equal_counts(stream, n_frames):
    events, size = stream
    per_frame = to_frames(events, size, n_frames, slicing="count").sum(dim=(1, 2, 3))
    n = len(events)
    assert per_frame.sum().item() == n
    assert per_frame.max() - per_frame.min() <= 1
    if n % n_frames == 0:
        assert torch.all(per_frame == n // n_frames)


def test_count_frames_follow_stream_order():
    events = make_events([0, 1, 2, 3, 4, 5], [0] * 6, [0, 0, 0, 1, 5, 9], [1, 0, 1, 0, 1, 0])
    frames = to_frames(events, (6, 1), 3, slicing="count", polarity="sum")
    assert frames[:, 0, 0].tolist() == [[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]]


def test_time_window_bounds_and_explicit_window():
    events = make_events([0, 1, 2, 3], [0, 0, 0, 0], [100, 149, 150, 199], [1, 1, 0, 0])
    frames = to_frames(events, (4, 1), 2, polarity="sum")
    assert frames[0, 0, 0].tolist() == [1, 1, 0, 0] and frames[1, 0, 0].tolist() == [0, 0, 1, 1]
    window = to_frames(events, (4, 1), 2, t_start=120, t_end=180, polarity="sum")
    assert window.sum().item() == 2 and window[0, 0, 0, 1] == 1 and window[1, 0, 0, 2] == 1
    with pytest.raises(ValueError, match="empty time window"):
        to_frames(events, (4, 1), 2, t_start=5, t_end=5)
    with pytest.raises(ValueError, match="outside"):
        to_frames(events, (3, 1), 2)


def test_empty_sample_gives_zero_frames():
    events = make_events([], [], [], [])
    assert torch.equal(to_frames(events, (5, 4), 3), torch.zeros(3, 2, 4, 5))
    assert torch.equal(to_counts(events, (5, 4)), torch.zeros(2, 4, 5))


@SETTINGS
@given(stream=event_streams(max_w=128, max_h=128), data=st.data())
def test_downscale_conserves_counts_and_bins_by_integer_division(stream, data):
    events, (w, h) = stream
    out = (data.draw(st.integers(1, w)), data.draw(st.integers(1, h)))
    small, size = downscale_events(events, (w, h), out)
    assert size == out and len(small) == len(events)
    assert np.array_equal(small["x"], events["x"].astype(int) * out[0] // w)
    assert np.array_equal(small["y"], events["y"].astype(int) * out[1] // h)
    frames = to_frames(events, (w, h), 2, out_size=out)
    assert frames.shape[-2:] == (out[1], out[0]) and frames.sum().item() == len(events)


def test_ecc_downscale_128_to_42():
    events = make_events([0, 3, 4, 127], [127, 6, 9, 0], [0, 1, 2, 3], [1, 0, 1, 1])
    small, _ = downscale_events(events, (128, 128), (42, 42))
    assert small["x"].tolist() == [0, 0, 1, 41] and small["y"].tolist() == [41, 1, 2, 0]


def test_counts_window_and_normalization():
    t = [0, 1_000_000, 1_299_999, 1_300_000, 2_000_000]
    events = make_events([1, 1, 2, 2, 3], [0, 0, 0, 0, 0], np.array(t) + 500, [1, 1, 0, 1, 1])
    counts = to_counts(events, (4, 1), normalization=2.0)
    assert counts.shape == (2, 1, 4)
    assert counts[1, 0].tolist() == [0, 1.0, 0, 0] and counts[0, 0].tolist() == [0, 0, 0.5, 0]
    all_counts = to_counts(events, (4, 1), duration_us=None, polarity="sum")
    assert all_counts.sum().item() == 5
    late = to_counts(events, (4, 1), t_start=1_300_500, duration_us=10, polarity="sum")
    assert late[0, 0].tolist() == [0, 0, 1, 0]
    assert torch.equal(ToCounts((4, 1), normalization=2.0)(events), counts)


def test_transforms_with_denoising():
    cluster = make_events([5, 6, 5, 20], [5, 5, 6, 20], [0, 10, 20, 30], [1, 1, 0, 1])
    frames = ToFrames((32, 32), 2, filter_time_us=100)(cluster)
    assert frames.sum().item() == 2 and frames[..., 20, 20].sum() == 0  # the first has no support


# -- denoising ----------------------------------------------------------------------------------
def _reference_filter(events, filter_time):
    keep = []
    for e in events:
        ok = False
        for f in events:
            dx, dy = abs(int(e["x"]) - int(f["x"])), abs(int(e["y"]) - int(f["y"]))
            if max(dx, dy) == 1 and 0 <= int(e["t"]) - int(f["t"]) < filter_time:
                ok = True
                break
        keep.append(ok)
    return events[np.array(keep, dtype=bool)] if len(events) else events


@SETTINGS
@given(stream=event_streams(max_w=8, max_h=8, max_n=60), filter_time=st.integers(1, 400_000))
def test_denoise_matches_brute_force_definition(stream, filter_time):
    events, size = stream
    got = background_activity_filter(events, size, filter_time)
    assert np.array_equal(got, _reference_filter(events, filter_time))


def test_denoise_drops_isolated_event_and_keeps_cluster():
    events = make_events(
        [10, 11, 10, 30, 30, 50],
        [10, 10, 11, 30, 30, 5],
        [1000, 1500, 2000, 2100, 2200, 90_000],
        [1, 1, 0, 1, 1, 0],
    )
    kept = background_activity_filter(events, (64, 64), 10_000)
    # the cluster's first event has no earlier neighbour; the other two are supported by it;
    # the repeating pixel (30, 30) does not support itself; (50, 5) is alone
    assert kept["t"].tolist() == [1500, 2000]
    late = make_events([10, 11], [10, 10], [0, 10_000], [1, 1])
    assert len(background_activity_filter(late, (64, 64), 10_000)) == 0
    assert len(background_activity_filter(late, (64, 64), 10_001)) == 1
