"""Data-loading throughput: CIFAR in memory, JPEG ImageFolder streaming, Pillow vs simplejpeg.

Writes synthetic data in the official on-disk formats to a temporary folder (a CIFAR-10 binary
release of ``--cifar`` training images; ``--jpegs`` photo-like 500×375 JPEGs at quality 90 in an
ImageFolder tree), then prints markdown tables of images per second:

    python bench/data_throughput.py [--cifar 50000] [--jpegs 512] [--workers 0,1,2] [--threads N]

Timings are wall-clock medians of ``--repeats`` runs (after one warm-up run for the loaders).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from spikebridge.data import BatchLoader, load_dataset, load_streaming_dataset, make_loader
from spikebridge.data import imagefolder as imagefolder_module


def _median_rate(n_images: int, fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n_images / statistics.median(times)


def write_cifar10_binary(directory: Path, n_train: int) -> None:
    """A CIFAR-10 binary release (random pixels) with ``n_train`` images over the 5 batches."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = np.full(5, n_train // 5)
    sizes[: n_train % 5] += 1
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name, n in zip(names, [*sizes, 1000], strict=True):
        records = rng.integers(0, 256, size=(n, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        (directory / name).write_bytes(records.tobytes())


def photo_jpeg(rng: np.random.Generator, height: int = 375, width: int = 500) -> bytes:
    """A smooth random colour image with mild noise, JPEG quality 90 (~60 KB, photo-like)."""
    low = torch.from_numpy(rng.uniform(0, 255, (1, 3, 12, 16)).astype(np.float32))
    image = F.interpolate(low, size=(height, width), mode="bicubic", align_corners=False)
    image = image + torch.from_numpy(rng.normal(0, 8, (1, 3, height, width)).astype(np.float32))
    array = image.clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_jpeg_tree(root: Path, n: int, classes: int = 8) -> list[bytes]:
    rng = np.random.default_rng(0)
    blobs = []
    for i in range(n):
        folder = root / "train" / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        blob = photo_jpeg(rng)
        (folder / f"img_{i:06d}.JPEG").write_bytes(blob)
        blobs.append(blob)
    (root / "val").symlink_to(root / "train")
    return blobs


def cifar_table(root: Path, n_train: int, repeats: int) -> list[str]:
    write_cifar10_binary(root / "cifar-10-batches-bin", n_train)
    rows = ["| CIFAR-10 (in memory) | images/s |", "|---|---:|"]
    rate = _median_rate(n_train, lambda: load_dataset("cifar10", "train", root), repeats)
    rows.append(f"| read the binary release ({n_train} images) | {rate:,.0f} |")
    train = load_dataset("cifar10", "train", root)
    for augment in (False, True):
        loader = BatchLoader(train, 128, shuffle=True, augment=augment, crop_padding=4)
        rate = _median_rate(len(train), lambda loader=loader: list(loader), repeats)
        what = "random crop (pad 4) + flip + normalise" if augment else "shuffle + normalise"
        rows.append(f"| BatchLoader, batch 128, {what} | {rate:,.0f} |")
    return rows


def decode_table(blobs: list[bytes], files: list[Path], repeats: int) -> list[str]:
    rows = ["| decoder (500×375 JPEG, q 90) | from memory, images/s | from file, images/s |"]
    rows.append("|---|---:|---:|")
    for decoder in imagefolder_module.available_decoders():
        memory = _median_rate(
            len(blobs), lambda d=decoder: [imagefolder_module.decode_image(b, d) for b in blobs],
            repeats,
        )  # fmt: skip
        disk = _median_rate(
            len(files), lambda d=decoder: [imagefolder_module.decode_image(f, d) for f in files],
            repeats,
        )  # fmt: skip
        label = {"pil": f"Pillow {Image.__version__}", "simplejpeg": "simplejpeg"}[decoder]
        if decoder == "simplejpeg":
            import simplejpeg

            label += f" {simplejpeg.__version__}"
        rows.append(f"| {label} | {memory:,.0f} | {disk:,.0f} |")
    return rows


def imagefolder_table(root: Path, n: int, workers: list[int], repeats: int) -> list[str]:
    rows = ["| ImageFolder → batches of 32 × 3×224×224 | decoder | " + " | ".join(
        f"{w} worker{'s' if w != 1 else ''}" for w in workers) + " |"]  # fmt: skip
    rows.append("|---|---|" + "---:|" * len(workers))
    for split, what in (("train", "RandomResizedCrop + flip"), ("val", "resize 256 + centre crop")):
        for decoder in imagefolder_module.available_decoders()[::-1]:
            dataset = load_streaming_dataset("imagenet", split, root, decoder=decoder)
            rates = []
            for w in workers:
                loader = make_loader(dataset, 32, shuffle=True, workers=w, seed=0)
                list(loader)  # warm-up (and page cache)
                rates.append(_median_rate(n, lambda loader=loader: list(loader), repeats))
            cells = " | ".join(f"{r:,.0f}" for r in rates)
            rows.append(f"| {what} | {decoder} | {cells} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cifar", type=int, default=50000, help="CIFAR training images")
    parser.add_argument("--jpegs", type=int, default=512, help="JPEG files in the ImageFolder")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    workers = [int(w) for w in args.workers.split(",")]
    warnings.simplefilter("ignore")
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"decoders {imagefolder_module.available_decoders()}, "
        f"load average at start {os.getloadavg()[0]:.1f}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print("\n".join(cifar_table(root / "cifar", args.cifar, args.repeats)) + "\n")
        blobs = write_jpeg_tree(root / "jpeg", args.jpegs)
        files = sorted((root / "jpeg" / "train").rglob("*.JPEG"))
        sizes = [len(b) for b in blobs]
        print(f"JPEG files: {len(blobs)}, mean {np.mean(sizes) / 1024:.0f} KiB\n")
        print("\n".join(decode_table(blobs, files, args.repeats)) + "\n")
        print("\n".join(imagefolder_table(root / "jpeg", args.jpegs, workers, args.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
