"""Event-data throughput: our readers and representations, and tonic's readers on the same files.

Writes, into a temporary folder:

- an N-MNIST tree emulated from Fashion-MNIST test images (``--samples`` of them; random
  blobs when the IDX file is absent) with :func:`spikebridge.events.write_nmnist_dataset`,
- a DVS128-Gesture-like AEDAT 3.1 recording (``--gesture-events`` events in packets of 1024,
  10 labelled windows) and
- CIFAR10-DVS-like AEDAT 2.0 files (``--cifar-files`` of ``--cifar-events`` events),

then times, over ``--repeats`` runs (min / median / max of events/s and samples/s): the file
readers, the datasets, framing (time and count slicing, count images, 128→42 down-scaling) and
the background-activity filter. If tonic is importable (``--tonic-site DIR`` appends a
site-packages folder of another environment, e.g. a throwaway venv, to ``sys.path``), its
``read_mnist_file``, ``read_dvs_ibm`` (AEDAT 3.x), ``read_dvs_128`` (AEDAT 2.0) and
``denoise_numpy`` run on the same files, interleaved with ours run by run, and the decoded
events are cross-checked field by field::

    python bench/events_readers.py [--samples 300] [--repeats 5] [--tonic-site DIR] [--json F]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from spikebridge.events import (
    CIFAR10DVS_CLASSES,
    DVS128_SENSOR,
    NMNIST,
    NMNIST_SENSOR,
    Aedat31File,
    DVSGesture,
    EmulatorConfig,
    EventBatchLoader,
    ToFrames,
    background_activity_filter,
    read_aedat2,
    read_aedat31,
    read_nmnist_file,
    to_counts,
    to_frames,
    write_nmnist_dataset,
)

FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def fashion_images(n: int) -> np.ndarray:
    """The first ``n`` Fashion-MNIST test images (IDX, gzip) or, if absent, random blobs."""
    if FASHION.is_file():
        with gzip.open(FASHION) as f:
            raw = f.read(16 + n * 784)
        return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:n].copy()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28]
    out = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        cx, cy, r = rng.uniform(8, 20), rng.uniform(8, 20), rng.uniform(4, 9)
        out[i] = np.where((xx - cx) ** 2 + (yy - cy) ** 2 < r * r, 220, 0)
    return out


def write_gesture(directory: Path, n_events: int, packet: int = 1024) -> Path:
    """An AEDAT 3.1 recording (polarity packets only, overflow 0) plus a 10-window labels file."""
    rng = np.random.default_rng(1)
    t = np.sort(rng.integers(0, 60_000_000, n_events)).astype(np.uint32)
    x, y, p = (
        rng.integers(0, 128, n_events),
        rng.integers(0, 128, n_events),
        rng.integers(0, 2, n_events),
    )
    data = ((x << 17) | (y << 2) | (p << 1) | 1).astype("<u4")
    body = np.empty(n_events, dtype=[("d", "<u4"), ("t", "<i4")])
    body["d"], body["t"] = data, t.astype(np.int32)
    path = directory / "user01_lab.aedat"
    with open(path, "wb") as f:
        f.write(b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n")
        for s in range(0, n_events, packet):
            chunk = body[s : s + packet]
            f.write(struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, len(chunk), len(chunk), len(chunk)))
            f.write(chunk.tobytes())
    rows = ["class,startTime_usec,endTime_usec"]
    rows += [
        f"{k % 11 + 1},{k * 6_000_000 + 200_000},{k * 6_000_000 + 5_800_000}" for k in range(10)
    ]
    (directory / "user01_lab_labels.csv").write_text("\n".join(rows) + "\n")
    return path


def write_cifar(directory: Path, n_files: int, n_events: int) -> list[Path]:
    """AEDAT 2.0 DVS128 files (big-endian address, timestamp) in CIFAR10-DVS class folders."""
    rng = np.random.default_rng(2)
    header = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
    paths = []
    for i in range(n_files):
        c = CIFAR10DVS_CLASSES[i % 10]
        rec = np.empty(n_events, dtype=[("a", ">u4"), ("t", ">i4")])
        raw_x, raw_y, bit = (
            rng.integers(0, 128, n_events),
            rng.integers(0, 128, n_events),
            rng.integers(0, 2, n_events),
        )
        rec["a"] = (raw_y << 8) | (raw_x << 1) | bit
        rec["t"] = np.sort(rng.integers(0, 1_300_000, n_events))
        path = directory / c / f"cifar10_{c}_{i // 10}.aedat"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(header + rec.tobytes())
        paths.append(path)
    return paths


def stats(times: list[float], n_events: int, n_samples: int) -> dict:
    rates = {
        "events_per_s": [n_events / s for s in times],
        "samples_per_s": [n_samples / s for s in times],
    }
    return {
        k: {"min": min(v), "median": statistics.median(v), "max": max(v)} for k, v in rates.items()
    } | {"n_events": n_events, "n_samples": n_samples, "seconds_median": statistics.median(times)}


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_pair(repeats: int, ours: Callable, theirs: Callable | None) -> tuple[list, list]:
    """Interleave our run and tonic's run (alternating which goes first) after one warm-up."""
    ours()
    if theirs is not None:
        theirs()
    a, b = [], []
    for r in range(repeats):
        first_ours = r % 2 == 0
        if first_ours:
            a.append(timed(ours))
        if theirs is not None:
            b.append(timed(theirs))
        if not first_ours:
            a.append(timed(ours))
    return a, b


def tonic_aedat(tio, path: Path, layout: str):
    """tonic's AEDAT decoding: ``read_dvs_ibm`` / ``read_dvs_128`` when they work; in tonic 1.7.0
    both unpack two values from ``read_aedat_header_from_file``, which returns three, so they
    raise ValueError; then the same steps (header, ``get_aer_events_from_file``, their masks)."""
    wrapper = tio.read_dvs_ibm if layout == "ibm" else tio.read_dvs_128
    try:
        return wrapper(str(path))[1], "wrapper"
    except ValueError:
        pass
    version, start = tio.read_aedat_header_from_file(str(path))[:2]
    ev = tio.get_aer_events_from_file(str(path), version, start)
    a, t = ev["address"], ev["timeStamp"]
    if layout == "ibm":
        x, y, p = (a >> 17) & 0x1FFF, (a >> 2) & 0x1FFF, (a >> 1) & 1
    else:
        x, y, p = (a >> 8) & 0x7F, (a >> 1) & 0x7F, a & 1
    return tio.make_structured_array(x, y, t, p), "steps (wrapper broken)"


def fmt(r: float) -> str:
    return f"{r / 1e6:.2f} M" if r >= 1e6 else f"{r / 1e3:.1f} k" if r >= 1e3 else f"{r:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=300, help="emulated N-MNIST samples")
    ap.add_argument("--gesture-events", type=int, default=2_000_000)
    ap.add_argument("--cifar-files", type=int, default=20)
    ap.add_argument("--cifar-events", type=int, default=150_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--tonic-site", type=Path, default=None, help="site-packages holding tonic")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.tonic_site is not None:
        sys.path.append(str(args.tonic_site))
    try:
        import tonic  # noqa: F401
        import tonic.io as tio
        from tonic.functional.denoise import denoise_numpy

        tonic_version = tonic.__version__ if hasattr(tonic, "__version__") else "?"
    except ImportError:
        tio = None
        tonic_version = None
    results: dict = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "tonic": tonic_version,
        "threads": args.threads,
        "repeats": args.repeats,
    }
    rows = []

    def add(name, ours, theirs=None):
        results[name] = {"ours": ours} | ({"tonic": theirs} if theirs else {})
        line = [name, fmt(ours["events_per_s"]["median"]), fmt(ours["samples_per_s"]["median"])]
        line.append(f"{fmt(ours['events_per_s']['min'])} / {fmt(ours['events_per_s']['max'])}")
        if theirs:
            line += [
                fmt(theirs["events_per_s"]["median"]),
                f"{ours['events_per_s']['median'] / theirs['events_per_s']['median']:.1f}×",
            ]
        else:
            line += ["–", "–"]
        rows.append(line)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # -- N-MNIST: emulate, write, read ---------------------------------------------------
        imgs = fashion_images(args.samples)
        start = time.perf_counter()
        write_nmnist_dataset(
            tmp / "nmnist", (imgs, np.arange(len(imgs)) % 10), config=EmulatorConfig()
        )
        emu_s = time.perf_counter() - start
        ds = NMNIST(tmp / "nmnist")
        files = [ds.source(i) for i in range(len(ds))]
        n_ev = sum(len(read_nmnist_file(f)) for f in files)
        results["emulator"] = {
            "images": len(imgs),
            "seconds": emu_s,
            "images_per_s": len(imgs) / emu_s,
            "events_per_image": n_ev / len(imgs),
            "source": "fashion-mnist" if FASHION.is_file() else "random blobs",
        }
        if tio is not None:
            dt = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
            for f in files:
                a, b = read_nmnist_file(f), tio.read_mnist_file(str(f), dtype=dt)
                assert all(np.array_equal(a[k], b[k]) for k in "xytp"), f
            results["crosscheck_nmnist"] = f"{len(files)} files, identical x, y, t, p"

        def ours_nmnist():
            for f in files:
                read_nmnist_file(f)

        def tonic_nmnist():
            for f in files:
                tio.read_mnist_file(str(f), dtype=dt)

        a, b = run_pair(args.repeats, ours_nmnist, tonic_nmnist if tio else None)
        add(
            "N-MNIST .bin read",
            stats(a, n_ev, len(files)),
            stats(b, n_ev, len(files)) if b else None,
        )
        a, _ = run_pair(args.repeats, lambda: [ds[i] for i in range(len(ds))], None)
        add("N-MNIST dataset[i]", stats(a, n_ev, len(ds)))

        samples = [read_nmnist_file(f) for f in files]
        for name, fn in [
            ("frames T=10 by time", lambda e: to_frames(e, NMNIST_SENSOR, 10)),
            ("frames T=10 by count", lambda e: to_frames(e, NMNIST_SENSOR, 10, slicing="count")),
            ("counts (CNN input)", lambda e: to_counts(e, NMNIST_SENSOR)),
        ]:
            a, _ = run_pair(args.repeats, lambda fn=fn: [fn(e) for e in samples], None)
            add(f"N-MNIST {name}", stats(a, n_ev, len(samples)))
        a, b = run_pair(
            args.repeats,
            lambda: [background_activity_filter(e, NMNIST_SENSOR, 10_000) for e in samples],
            (lambda: [denoise_numpy(e, 10_000) for e in samples]) if tio else None,
        )
        add(
            "N-MNIST denoise 10 ms",
            stats(a, n_ev, len(samples)),
            stats(b, n_ev, len(samples)) if b else None,
        )
        loader = EventBatchLoader(ds, 32, ToFrames(NMNIST_SENSOR, 10), shuffle=True)
        a, _ = run_pair(args.repeats, lambda: list(loader), None)
        add("N-MNIST loader B=32 T=10", stats(a, n_ev, len(ds)))

        # -- AEDAT 3.1 (DVS128 Gesture) -------------------------------------------------------
        gdir = tmp / "gesture"
        gdir.mkdir()
        gpath = write_gesture(gdir, args.gesture_events)
        full = read_aedat31(gpath)
        if tio is not None:
            tev, how = tonic_aedat(tio, gpath, "ibm")
            assert all(np.array_equal(full[k], tev[k]) for k in "xytp")
            results["crosscheck_aedat31"] = (
                f"{len(full)} events, identical x, y, t, p (tonic {how})"
            )
        a, b = run_pair(
            args.repeats,
            lambda: read_aedat31(gpath),
            (lambda: tonic_aedat(tio, gpath, "ibm")) if tio else None,
        )
        add("AEDAT 3.1 full file", stats(a, len(full), 1), stats(b, len(full), 1) if b else None)
        gds = DVSGesture(gdir, None)
        n_win = sum(len(gds[i][0]) for i in range(len(gds)))
        a, _ = run_pair(args.repeats, lambda: [gds[i] for i in range(len(gds))], None)
        add("DVSGesture windows (indexed)", stats(a, n_win, len(gds)))
        a, _ = run_pair(args.repeats, lambda: Aedat31File(gpath).index, None)
        add("AEDAT 3.1 packet index build", stats(a, len(full), 1))
        gsamples = [gds[i][0] for i in range(len(gds))]
        a, _ = run_pair(
            args.repeats,
            lambda: [to_frames(e, DVS128_SENSOR, 16, out_size=(42, 42)) for e in gsamples],
            None,
        )
        add("DVS frames T=16 128→42", stats(a, n_win, len(gsamples)))
        a, _ = run_pair(
            args.repeats,
            lambda: [background_activity_filter(e, DVS128_SENSOR, 10_000) for e in gsamples],
            None,
        )
        add("DVS denoise 10 ms", stats(a, n_win, len(gsamples)))

        # -- AEDAT 2.0 (CIFAR10-DVS) ----------------------------------------------------------
        cpaths = write_cifar(tmp / "cifar", args.cifar_files, args.cifar_events)
        n_c = args.cifar_files * args.cifar_events
        if tio is not None:
            for pth in cpaths:
                ours_ev = read_aedat2(pth)
                tev, how = tonic_aedat(tio, pth, "dvs128")
                # tonic: x = raw_y, y = raw_x, p = bit0; ours (jAER): x = 127 - raw_x, y = raw_y
                assert np.array_equal(tev["x"], ours_ev["y"])
                assert np.array_equal(tev["y"], 127 - ours_ev["x"])
                assert np.array_equal(tev["p"].astype(int), 1 - ours_ev["p"])
                assert np.array_equal(tev["t"], ours_ev["t"])
            results["crosscheck_aedat2"] = (
                f"{len(cpaths)} files: tonic (x, y, p) = (our y, 127 - our x, 1 - our p), same t "
                f"(tonic {how})"
            )
        a, b = run_pair(
            args.repeats,
            lambda: [read_aedat2(pth) for pth in cpaths],
            (lambda: [tonic_aedat(tio, pth, "dvs128") for pth in cpaths]) if tio else None,
        )
        add(
            "AEDAT 2.0 files", stats(a, n_c, len(cpaths)), stats(b, n_c, len(cpaths)) if b else None
        )

    head = (
        "| measurement | events/s (median) | samples/s (median) | events/s min / max "
        "| tonic events/s (median) | ours / tonic |"
    )
    print(head)
    print("|" + "---|" * 6)
    for r in rows:
        print("| " + " | ".join(r) + " |")
    emu = results["emulator"]
    print(
        f"\nemulator: {emu['images']} {emu['source']} images in {emu['seconds']:.2f} s "
        f"({emu['images_per_s']:.1f} images/s, {emu['events_per_image']:.0f} events/image, "
        "written as an N-MNIST tree)"
    )
    for k in ("crosscheck_nmnist", "crosscheck_aedat31", "crosscheck_aedat2"):
        if k in results:
            print(f"{k}: {results[k]}")
    print(f"tonic: {tonic_version or 'not importable'}; torch threads {args.threads}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
