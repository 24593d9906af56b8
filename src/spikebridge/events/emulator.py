"""An event-camera emulator: static images moved along N-MNIST's saccades, seen by DVS pixels.

**Motion.** N-MNIST was recorded by an ATIS sensor on a pan-tilt unit making three saccades of
~100 ms each (~300 ms a sample) in front of a still MNIST digit on a monitor. We move the image
over the canvas instead, along a closed triangle of displacements (pixels, x right, y down)::

    d0 = (0, 0) -> d1 = (A/2, A) -> d2 = (A, 0) -> d0,     one saccade per edge

at constant speed within each saccade (``saccade_us`` long, 100 ms by default), amplitude ``A``
(``amplitude_px``, 4 px by default). The image's top-left corner is at
``o + d(t)``, ``o = ((W - w - A) / 2, (H - h - A) / 2)``, so a 28×28 image stays inside the
34×34 canvas for the whole path (N-MNIST's 34 = 28 + the saccade extent).

**Rendering.** At times ``t_k = k * dt_us``, ``k = 0..K``, ``K = 3 * saccade_us / dt_us``, the
canvas is the image sampled at sub-pixel positions by bilinear interpolation (zero outside)::

    I_k(u, v) = bilinear(image, u - o_x - d_x(t_k), v - o_y - d_y(t_k))

**Pixels.** Each pixel compares its log intensity ``L = log(I + log_eps)`` (``I`` in [0, 1])
with a reference ``R`` memorised at its last event (``R = L_0`` at start)::

    ON  event at t_k  if  L_k - R >= theta_on     then  R += theta_on
    OFF event at t_k  if  R - L_k >= theta_off    then  R -= theta_off

at most one event per pixel per step, and none within ``refractory_us`` of the pixel's previous
event (the effective refractory period is ``max(refractory_us, dt_us)``). The reference moves
by one threshold per event (ESIM / v2e style), so a large change produces a train of events,
rate-limited by the refractory period. Optional per-pixel threshold mismatch: thresholds drawn
from ``N(theta, (threshold_sigma * theta)^2)`` (floored at 10 % of ``theta``), seeded.

Everything is vectorised over pixels (and over a batch of images); the only Python loop is over
the ``K`` time steps.

:func:`write_nmnist_dataset` converts a whole image dataset (e.g. Fashion-MNIST) into an N-MNIST
tree ``Train/<label>/<idx>.bin``, ``Test/<label>/<idx>.bin`` readable by :class:`~.nmnist.NMNIST`,
atomically.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .nmnist_bin import NMNIST_SENSOR, NMNIST_TIMESTAMP_LIMIT, write_nmnist_file
from .types import EVENT_DTYPE, SensorSize

__all__ = [
    "EmulatorConfig",
    "dvs_pixel_events",
    "emulate_image",
    "emulate_images",
    "render_saccades",
    "saccade_displacements",
    "write_nmnist_dataset",
]


@dataclass(frozen=True)
class EmulatorConfig:
    """Parameters of the emulator (see the module doc for the equations).

    Attributes:
        canvas: ``(width, height)`` of the emulated sensor (34×34, N-MNIST's).
        saccade_us: duration of one saccade, µs (3 saccades a sample).
        amplitude_px: ``A``, the extent of the triangular path in pixels.
        dt_us: time resolution of the rendering, µs.
        theta_on, theta_off: ON / OFF contrast thresholds on the log intensity.
        refractory_us: a pixel's dead time after an event, µs.
        log_eps: offset in ``log(I + log_eps)``; keeps black pixels finite.
        threshold_sigma: relative per-pixel threshold mismatch (0 = identical pixels).
        seed: seed of the threshold mismatch.
    """

    canvas: SensorSize = NMNIST_SENSOR
    saccade_us: int = 100_000
    amplitude_px: float = 4.0
    dt_us: int = 1000
    theta_on: float = 0.2
    theta_off: float = 0.2
    refractory_us: int = 1000
    log_eps: float = 0.1
    threshold_sigma: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dt_us <= 0 or self.saccade_us <= 0 or self.saccade_us % self.dt_us:
            raise ValueError("saccade_us must be a positive multiple of dt_us (> 0)")
        if self.theta_on <= 0 or self.theta_off <= 0:
            raise ValueError("contrast thresholds must be > 0")
        if self.refractory_us < 0 or self.log_eps <= 0 or self.threshold_sigma < 0:
            raise ValueError("refractory_us >= 0, log_eps > 0 and threshold_sigma >= 0 required")
        if self.amplitude_px < 0:
            raise ValueError("amplitude_px must be >= 0")

    @property
    def times_us(self) -> np.ndarray:
        """The rendering times ``t_k = k * dt_us``, ``k = 0..3 * saccade_us / dt_us``."""
        return np.arange(0, 3 * self.saccade_us + 1, self.dt_us, dtype=np.int64)


def saccade_displacements(
    times_us: np.ndarray, amplitude_px: float = 4.0, saccade_us: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """Displacement ``(d_x, d_y)`` in pixels at each time along the triangle
    ``(0,0) -> (A/2, A) -> (A, 0) -> (0,0)``, one edge per ``saccade_us`` (clamped after 3)."""
    a = float(amplitude_px)
    vertices = np.array([[0.0, 0.0], [a / 2, a], [a, 0.0], [0.0, 0.0]])
    t = np.clip(np.asarray(times_us, dtype=np.float64), 0, 3 * saccade_us)
    seg = np.minimum((t // saccade_us).astype(np.int64), 2)
    frac = (t - seg * saccade_us) / saccade_us
    pos = vertices[seg] + frac[:, None] * (vertices[seg + 1] - vertices[seg])
    return pos[:, 0], pos[:, 1]


def _as_unit_images(images) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"images must be [H, W] or [N, H, W], got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32)
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise ValueError("float images must lie in [0, 1] (or pass uint8 images)")
    return arr


def render_saccades(images, config: EmulatorConfig = EmulatorConfig()) -> np.ndarray:
    """Render images moving along the saccade path: float32 ``[B, K+1, H, W]`` intensities.

    ``images``: ``[B, h, w]`` (or ``[h, w]``) uint8 or float in [0, 1], ``h <= H``, ``w <= W``.
    """
    img = _as_unit_images(images)
    b, h, w = img.shape
    cw, ch = config.canvas
    if h > ch or w > cw:
        raise ValueError(f"image {w}x{h} larger than the canvas {cw}x{ch}")
    times = config.times_us
    dx, dy = saccade_displacements(times, config.amplitude_px, config.saccade_us)
    ox = (cw - w - config.amplitude_px) / 2.0
    oy = (ch - h - config.amplitude_px) / 2.0
    # bilinear interpolation is separable: I_k = Ry_k @ image @ Rx_k^T, with Rx_k [W, w] holding
    # the weights (1 - f, f) of the two image columns around u - o_x - d_x(t_k) (zero outside)
    rx = _interpolation_matrices(np.arange(cw)[None, :] - (ox + dx)[:, None], w)  # [K, W, w]
    ry = _interpolation_matrices(np.arange(ch)[None, :] - (oy + dy)[:, None], h)  # [K, H, h]
    with torch.no_grad():
        rows = torch.matmul(torch.from_numpy(ry)[None], torch.from_numpy(img)[:, None])  # [B,K,H,w]
        out = torch.matmul(rows, torch.from_numpy(rx).transpose(1, 2)[None])  # [B, K, H, W]
    return out.contiguous().numpy()


def _interpolation_matrices(pos: np.ndarray, size: int) -> np.ndarray:
    """Linear-interpolation weights ``[K, N, size]`` sampling a line of ``size`` pixels at the
    real positions ``pos [K, N]`` (weight 0 outside ``0..size-1``)."""
    k, n = pos.shape
    i0 = np.floor(pos).astype(np.int64)
    f = (pos - i0).astype(np.float32)
    out = np.zeros((k, n, size + 2), dtype=np.float32)  # columns 0 and size+1 catch outside
    kk, nn = np.meshgrid(np.arange(k), np.arange(n), indexing="ij")
    for idx, wgt in ((i0, 1 - f), (i0 + 1, f)):
        col = np.clip(idx, -1, size) + 1
        np.add.at(out, (kk, nn, col), wgt)
    return np.ascontiguousarray(out[:, :, 1 : size + 1])


def _thresholds(config: EmulatorConfig, shape, image_ids: Sequence[int]):
    on = np.full(shape, config.theta_on, dtype=np.float32)
    off = np.full(shape, config.theta_off, dtype=np.float32)
    if config.threshold_sigma > 0:
        for j, image_id in enumerate(image_ids):
            rng = np.random.default_rng([config.seed, int(image_id)])
            for arr, theta in ((on, config.theta_on), (off, config.theta_off)):
                draw = rng.normal(theta, config.threshold_sigma * theta, size=shape[1:])
                arr[j] = np.maximum(draw, 0.1 * theta)
    return on, off


def dvs_pixel_events(
    frames: np.ndarray,
    times_us: np.ndarray,
    config: EmulatorConfig = EmulatorConfig(),
    *,
    image_ids: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """The DVS pixel model (module doc) on intensity videos ``[B, K+1, H, W]`` in [0, 1].

    Frame 0 sets the references; events are emitted at ``times_us[1:]``. Returns one event array
    per video, in time order (within a step: row-major pixel order).
    """
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 4:
        raise ValueError(f"frames must be [B, K+1, H, W], got {frames.shape}")
    b, k1, h, w = frames.shape
    times_us = np.asarray(times_us, dtype=np.int64)
    if times_us.shape != (k1,):
        raise ValueError(f"times_us must have {k1} entries, got {times_us.shape}")
    ids = list(range(b)) if image_ids is None else list(image_ids)
    theta_on, theta_off = _thresholds(config, (b, h, w), ids)
    log_i = np.log(frames + np.float32(config.log_eps))
    ref = log_i[:, 0].copy()
    never = np.iinfo(np.int64).min // 2
    last = np.full((b, h, w), never, dtype=np.int64)
    chunks = []
    for k in range(1, k1):
        tk = int(times_us[k])
        diff = log_i[:, k] - ref
        ready = (tk - last) >= config.refractory_us
        on = ready & (diff >= theta_on)
        off = ready & (diff <= -theta_off)
        fire = on | off
        if not fire.any():
            continue
        ref += np.where(on, theta_on, 0) - np.where(off, theta_off, 0)
        last[fire] = tk
        bi, yi, xi = np.nonzero(fire)
        chunk = np.empty(bi.shape[0], dtype=[("b", "<i8")] + EVENT_DTYPE.descr)
        chunk["b"], chunk["x"], chunk["y"] = bi, xi, yi
        chunk["t"] = tk
        chunk["p"] = on[bi, yi, xi]
        chunks.append(chunk)
    if not chunks:
        return [np.zeros(0, dtype=EVENT_DTYPE) for _ in range(b)]
    allev = np.concatenate(chunks)
    allev = allev[np.argsort(allev["b"], kind="stable")]
    bounds = np.searchsorted(allev["b"], np.arange(b + 1))
    out = []
    for j in range(b):
        part = allev[bounds[j] : bounds[j + 1]]
        ev = np.empty(part.shape[0], dtype=EVENT_DTYPE)
        for name in EVENT_DTYPE.names:
            ev[name] = part[name]
        out.append(ev)
    return out


def emulate_images(
    images, config: EmulatorConfig = EmulatorConfig(), *, image_ids: Sequence[int] | None = None
) -> list[np.ndarray]:
    """Events of each image of ``[B, h, w]`` moved along the saccades (one array per image).

    ``image_ids`` (default ``0..B-1``) seed the per-pixel threshold mismatch of each image.
    """
    frames = render_saccades(images, config)
    return dvs_pixel_events(frames, config.times_us, config, image_ids=image_ids)


def emulate_image(image, config: EmulatorConfig = EmulatorConfig(), *, image_id: int = 0):
    """Events of one image ``[h, w]`` moved along the saccades (an :data:`EVENT_DTYPE` array)."""
    return emulate_images(np.asarray(image)[None], config, image_ids=[image_id])[0]


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_nmnist_dataset(
    root: str | os.PathLike[str],
    train: tuple[Sequence, Sequence] | None,
    test: tuple[Sequence, Sequence] | None = None,
    *,
    config: EmulatorConfig = EmulatorConfig(),
    batch_size: int = 64,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Emulate every image of an image dataset and write an N-MNIST tree at ``root``.

    Layout: ``root/Train/<label>/<idx>.bin`` and ``root/Test/<label>/<idx>.bin``; ``idx`` is the
    image's 1-based position in its split, zero-padded to 5 digits (N-MNIST's naming), each file
    in the format of :mod:`.nmnist_bin`. Images are read ``batch_size`` at a time from the given
    arrays (a ``np.memmap`` stays on disk).

    Atomic: the tree is written into a temporary folder beside ``root`` and renamed to ``root``
    only when complete; on any error the temporary folder is removed, so ``root`` is either
    absent or complete, never half written.

    Args:
        root: the folder to create; must not exist.
        train, test: ``(images [N, h, w] uint8 or float in [0, 1], labels [N] in 0..9)``, or
            ``None`` to skip a split.
        config: emulator parameters (the canvas must fit N-MNIST's one-byte coordinates).
        batch_size: images emulated together.
        progress: called as ``progress(split, done, total)`` after each batch.

    Returns:
        ``root`` as a ``Path``.
    """
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root} already exists; refusing to overwrite or merge")
    if config.canvas.width > 256 or config.canvas.height > 240:
        raise ValueError("N-MNIST files store x, y in one byte (and y = 240 is a marker)")
    if 3 * config.saccade_us >= NMNIST_TIMESTAMP_LIMIT:
        raise ValueError("the emulated duration exceeds N-MNIST's 23-bit timestamps")
    splits = [(name, data) for name, data in (("Train", train), ("Test", test)) if data]
    for name, (images, labels) in splits:
        if len(images) != len(labels):
            raise ValueError(f"{name}: {len(images)} images but {len(labels)} labels")
        lab = np.asarray(labels)
        if lab.size and (
            not np.issubdtype(lab.dtype, np.integer) or lab.min() < 0 or lab.max() > 9
        ):
            raise ValueError(f"{name}: labels must be integers 0..9")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        for name, (images, labels) in splits:
            n = len(images)
            width = max(5, len(str(n)))
            labels = np.asarray(labels)
            for label in np.unique(labels):
                (tmp / name / str(int(label))).mkdir(parents=True)
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                batch = np.asarray(images[start:stop])
                events = emulate_images(batch, config, image_ids=range(start, stop))
                for j, ev in enumerate(events):
                    idx = start + j
                    path = tmp / name / str(int(labels[idx])) / f"{idx + 1:0{width}d}.bin"
                    write_nmnist_file(path, ev)
                if progress is not None:
                    progress(name.lower(), stop, n)
        os.chmod(tmp, 0o777 & ~_current_umask())
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
