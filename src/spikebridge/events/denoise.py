"""Background-activity denoising of an event stream.

The standard background-activity filter (Delbruck's jAER ``BackgroundActivityFilter``): an event
is *supported*, and kept, when one of the 8 pixels around it (its 3×3 neighbourhood without the
pixel itself) fired shortly before::

    keep i  <=>  exists j : max(|x_i - x_j|, |y_i - y_j|) = 1  and  0 <= t_i - t_j < filter_time

Uncorrelated noise (isolated events, and hot pixels firing alone) has no such neighbour and is
dropped; the edges of a moving object fire in neighbouring pixels within a short time and are
kept. Events at the same timestamp at neighbouring pixels support each other. (tonic's
``denoise`` uses the 4-neighbourhood and a Python loop per event.)

Vectorised: the events are sorted once by the key ``pixel * span + t``; for each of the 8
offsets one ``np.searchsorted`` of the shifted keys finds, for every event, the latest event at
the neighbouring pixel with ``t_j <= t_i``. Cost ``O(N log N)``, no Python loop over events.
"""

from __future__ import annotations

import numpy as np

__all__ = ["background_activity_filter"]

_OFFSETS = [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dx, dy) != (0, 0)]


def background_activity_filter(events: np.ndarray, sensor_size, filter_time_us: int) -> np.ndarray:
    """Keep the events supported by a neighbour within ``filter_time_us`` µs (see module doc).

    Args:
        events: a :data:`~.types.EVENT_DTYPE` array.
        sensor_size: ``(width, height)``; events must lie inside.
        filter_time_us: the support window (> 0), e.g. 10 000 µs.

    Returns:
        the kept events, in their original order.
    """
    if filter_time_us <= 0:
        raise ValueError(f"filter_time_us must be > 0, got {filter_time_us}")
    n = events.shape[0]
    if n == 0:
        return events.copy()
    w, h = int(sensor_size[0]), int(sensor_size[1])
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    if x.min() < 0 or y.min() < 0 or x.max() >= w or y.max() >= h:
        raise ValueError(f"events outside the {w}x{h} sensor")
    t = events["t"].astype(np.int64)
    t = t - t.min()
    span = int(t.max()) + 1
    if w * h * span >= 2**62:
        raise ValueError("time span too long for the (pixel, t) key; split the stream first")
    key = (y * w + x) * span + t
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    sx, sy, st = x[order], y[order], t[order]
    supported = np.zeros(n, dtype=bool)  # in sorted order
    for dx, dy in _OFFSETS:
        # moving every key by the neighbour's pixel offset keeps the queries sorted, so the
        # searchsorted below walks sorted_key in order (cache friendly)
        which = np.flatnonzero((sx + dx >= 0) & (sx + dx < w) & (sy + dy >= 0) & (sy + dy < h))
        query = sorted_key[which] + (dy * w + dx) * span
        j = np.searchsorted(sorted_key, query, side="right") - 1
        ok = j >= 0
        found = sorted_key[np.where(ok, j, 0)]
        # same pixel <=> found >= that pixel's first key, query - t_i; then t_i - t_j = gap
        gap = query - found
        ok &= (gap <= st[which]) & (gap < filter_time_us)
        supported[which[ok]] = True
    keep = np.zeros(n, dtype=bool)
    keep[order] = supported
    return events[keep]
