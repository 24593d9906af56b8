"""ImageNet and generic ImageFolder datasets, streamed from disk image by image.

Layout: ``ROOT/train/<class>/*.JPEG`` and ``ROOT/val/<class>/*.JPEG`` (``.jpg``, ``.jpeg`` and
``.png`` too, any letter case; sub-folders of a class folder are included; names starting with
``.`` are ignored). Class ``k`` is the ``k``-th class folder name in sorted order — of ``train/``
whenever it exists, so a validation folder that lacks some classes still gets the training
labels. ImageNet's class folders are the WordNet ids (``n01440764`` …).

Symbolic links to directories inside a split folder (class folders or their sub-folders) are
not followed — a link loop such as ``val/a/loop -> ..`` would otherwise list images endlessly
or under the wrong class — unless ``follow_links=True`` (CLI ``--follow-links``,
``$SPIKEBRIDGE_FOLLOW_LINKS=1``): then each directory is entered once, by device and inode.
Skipped links are reported (a warning, or the error when nothing else is left). Links to image
files, and a split or data folder that is itself a link, are read as usual. An image declaring
more than :data:`MAX_IMAGE_PIXELS` pixels is refused from its header, before decoding.

Unlike :func:`spikebridge.data.load_dataset` nothing is loaded up front:
:func:`load_streaming_dataset` lists the files (sorted) and :class:`ImageFolderDataset` decodes
and transforms one image per ``__getitem__``; :func:`make_loader` batches it with worker
processes.

Decoding uses `simplejpeg <https://gitlab.com/jfolz/simplejpeg>`_ (libjpeg-turbo) for JPEG
files when it is installed — about 1.7× faster than Pillow here, with identical pixels — and
Pillow otherwise (and for PNG, and for the JPEGs simplejpeg rejects, e.g. CMYK). Images are
converted to RGB.

Transforms are written on uint8 tensors (no torchvision) and use bilinear interpolation with
antialiasing:

* training: RandomResizedCrop to ``image_size`` (area scale ``(0.08, 1)``, aspect ratio
  ``(3/4, 4/3)``) and a horizontal flip with probability 0.5;
* evaluation: resize the shorter side to ``resize_size`` (256 for 224) and take the centre
  ``image_size`` crop;

then scaling to ``[0, 1]`` and normalisation with the mean/std (ImageNet's by default).

An image that cannot be read or decoded raises :class:`CorruptImageError`, naming the file; the
loader from :func:`make_loader` raises it in the main process (not as a worker traceback), or,
with ``skip_corrupt=True``, drops the image, warns and records it in ``loader.skipped``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from spikebridge.data.datasets import (
    DATA_DIR_ENV,
    STREAMING_DATASETS,
    DatasetFormatError,
    DatasetNotFoundError,
    _search_roots,
    dataset_key,
)
from spikebridge.data.loader import EpochCounter

try:  # optional, faster JPEG decoding
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    _simplejpeg = None

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "CorruptImageError",
    "EvalTransform",
    "ImageFolderDataset",
    "SeededSampler",
    "StreamingLoader",
    "TrainTransform",
    "available_decoders",
    "center_crop",
    "decode_image",
    "list_streaming_datasets",
    "load_streaming_dataset",
    "make_loader",
    "random_resized_crop_box",
    "resize_shorter_side",
    "resized_crop",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
"""File name endings recognised as images (compared case-insensitively)."""

_JPEG_MAGIC = b"\xff\xd8"


class CorruptImageError(DatasetFormatError):
    """An image file cannot be read or decoded.

    Attributes:
        path: the file.
        reason: what went wrong.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path}: cannot read this image ({reason})")

    def __reduce__(self):  # keep the exception picklable despite the custom __init__
        return type(self), (self.path, self.reason)


# --------------------------------------------------------------------------------------------
# decoding


def available_decoders() -> list[str]:
    """The decoders usable here: ``"pil"`` always, ``"simplejpeg"`` when it is installed."""
    return ["pil"] + (["simplejpeg"] if _simplejpeg is not None else [])


MAX_IMAGE_PIXELS = 40_000_000
"""Largest image (width × height) decoded; ImageNet's largest are far below it. A few hundred
bytes of PNG can declare 12 000 × 12 000 pixels (1.7 GB decoded): the size is checked from the
header before anything is decoded."""


class _TooLarge(Exception):
    def __init__(self, width: int, height: int) -> None:
        super().__init__(f"{width} × {height} = {width * height:,} pixels, more than the "
                         f"MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS:,} this reader decodes")


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise _TooLarge(width, height)


def _decode_pil(data: bytes) -> np.ndarray:
    from PIL import Image

    with warnings.catch_warnings():  # our bound, checked below, is the lower one
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            opened = Image.open(io.BytesIO(data))  # lazy: reads the header only
        except Image.DecompressionBombError:
            opened = None
        if opened is None:  # above twice Pillow's own limit: read the size without its check
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                opened = Image.open(io.BytesIO(data))
            finally:
                Image.MAX_IMAGE_PIXELS = limit
        with opened as image:
            _check_pixels(*image.size)
            if image.mode != "RGB":
                image = image.convert("RGB")
            return np.array(image)


def decode_image(source: str | os.PathLike[str] | bytes, decoder: str = "auto") -> np.ndarray:
    """Decode an image file (or its bytes) to an RGB uint8 array ``[H, W, 3]``.

    Args:
        source: a path, or the encoded bytes.
        decoder: ``"auto"`` (simplejpeg for JPEG data when installed, else Pillow),
            ``"simplejpeg"`` (JPEG only, falls back to Pillow for what it rejects) or ``"pil"``.

    Raises:
        CorruptImageError: the file cannot be read or is not a decodable image.
        ValueError: unknown ``decoder``; ImportError: ``"simplejpeg"`` asked for but absent.
    """
    if decoder not in ("auto", "pil", "simplejpeg"):
        raise ValueError(f"decoder must be 'auto', 'pil' or 'simplejpeg', got {decoder!r}")
    if decoder == "simplejpeg" and _simplejpeg is None:
        raise ImportError(
            "decoder='simplejpeg' needs the simplejpeg package: pip install simplejpeg"
        )
    name = "<bytes>" if isinstance(source, bytes | bytearray) else str(source)
    try:
        data = bytes(source) if isinstance(source, bytes | bytearray) else Path(source).read_bytes()
    except OSError as exc:
        raise CorruptImageError(name, f"{type(exc).__name__}: {exc.strerror or exc}") from exc
    try:
        if decoder != "pil" and _simplejpeg is not None and data[:2] == _JPEG_MAGIC:
            try:
                height, width = _simplejpeg.decode_jpeg_header(data)[:2]
                _check_pixels(width, height)
                return _simplejpeg.decode_jpeg(data, colorspace="RGB")
            except ValueError:
                pass  # CMYK, truncated, ...: Pillow decides (and names the problem)
        image = _decode_pil(data)
    except _TooLarge as exc:
        raise CorruptImageError(name, str(exc)) from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
        from PIL import UnidentifiedImageError

        if isinstance(exc, UnidentifiedImageError):
            reason = "not an image format Pillow recognises"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        raise CorruptImageError(name, reason) from exc
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise CorruptImageError(name, f"decoded to {image.dtype} {image.shape}, not 8-bit RGB")
    return image


# --------------------------------------------------------------------------------------------
# transforms on uint8 tensors [3, H, W]


def _interpolate(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of a uint8 ``[3, H, W]`` tensor (channels-last fast path)."""
    batch = image.unsqueeze(0).contiguous(memory_format=torch.channels_last)
    if tuple(batch.shape[-2:]) == size:
        return batch[0]
    out = F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out[0]


def random_resized_crop_box(
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """Draw the box ``(top, left, h, w)`` of a RandomResizedCrop (the usual Inception recipe).

    Up to 10 tries draw an area fraction uniformly from ``scale`` and an aspect ratio ``w / h``
    log-uniformly from ``ratio``; the first box that fits gets a uniform position. If none fits,
    the centred box of the whole image clamped to ``ratio`` is used.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=generator))
        aspect = math.exp(
            float(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator))
        )
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(
    image: torch.Tensor, top: int, left: int, height: int, width: int, size: int
) -> torch.Tensor:
    """Crop ``image[:, top:top+height, left:left+width]`` and resize it to ``size × size``."""
    return _interpolate(image[:, top : top + height, left : left + width], (size, size))


def resize_shorter_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so that the shorter side is ``size``, keeping the aspect ratio (longer side
    ``int(size * long / short)``)."""
    h, w = image.shape[-2:]
    if h <= w:
        new = (size, int(size * w / h))
    else:
        new = (int(size * h / w), size)
    return _interpolate(image, new)


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The centred ``size × size`` window (offsets rounded to nearest).

    Raises:
        ValueError: the image is smaller than ``size``.
    """
    h, w = image.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"center_crop: image {h}×{w} is smaller than the crop {size}")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image[..., top : top + size, left : left + size]


class TrainTransform:
    """RandomResizedCrop to ``size`` then a random horizontal flip; uint8 ``[3, H, W]`` in/out."""

    def __init__(
        self,
        size: int = 224,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
    ) -> None:
        if size < 1 or not 0 < scale[0] <= scale[1] or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(
                f"bad RandomResizedCrop settings: size {size}, scale {scale}, ratio {ratio}"
            )
        self.size, self.scale, self.ratio, self.flip = int(size), scale, ratio, flip

    def __call__(
        self, image: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        box = random_resized_crop_box(*image.shape[-2:], generator, self.scale, self.ratio)
        out = resized_crop(image, *box, self.size)
        if self.flip and float(torch.rand(1, generator=generator)) < 0.5:
            out = out.flip(-1)
        return out


class EvalTransform:
    """Resize the shorter side to ``resize_size``, then centre-crop ``size``; uint8 in/out."""

    def __init__(self, size: int = 224, resize_size: int | None = None) -> None:
        resize_size = round(size * 256 / 224) if resize_size is None else int(resize_size)
        if size < 1 or resize_size < size:
            raise ValueError(
                f"need 1 <= size <= resize_size, got size {size}, resize {resize_size}"
            )
        self.size, self.resize_size = int(size), resize_size

    def __call__(
        self, image: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        del generator  # deterministic
        return center_crop(resize_shorter_side(image, self.resize_size), self.size)


# --------------------------------------------------------------------------------------------
# the dataset


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch single-threaded inside the block (restoring the thread count after it).

    The per-image ops are far too small to gain from intra-op threads, and when the CPUs are
    busy (training, other processes) their thread hand-offs cost 10-100× the work itself.
    DataLoader workers are single-threaded already; this covers ``workers=0``.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


FOLLOW_LINKS_ENV = "SPIKEBRIDGE_FOLLOW_LINKS"
"""Set to 1 to follow symbolic links to directories by default (the CLI's ``--follow-links``)."""


def _follow_default(follow_links: bool | None) -> bool:
    if follow_links is not None:
        return bool(follow_links)
    return os.environ.get(FOLLOW_LINKS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _find_classes(directory: Path, follow_links: bool = False) -> list[str]:
    """Sorted names of the visible sub-folders of ``directory`` (links to folders only when
    ``follow_links``)."""
    with os.scandir(directory) as entries:
        return sorted(e.name for e in entries
                      if not e.name.startswith(".") and e.is_dir(follow_symlinks=follow_links))


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _directory_key(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _list_images(
    directory: Path, classes: Sequence[str], follow_links: bool = False
) -> tuple[list[str], list[int], int]:
    """Relative paths (sorted within each class, sub-folders included), labels, and the number
    of symbolic links to directories that were skipped.

    Links to directories are not followed unless ``follow_links``. Links to image *files* are
    always read. With ``follow_links`` every directory is entered at most once, by device and
    inode: the split folder and every class folder are marked up front, and each class's own
    tree (its real sub-folders) is listed before any link is followed — so a link back to an
    ancestor (``val/a/loop -> ..``) neither loops nor lists an image twice, and a link into
    another class's folder never moves that class's images under this one. A folder reached
    only through links goes to the first class (in label order) whose tree links to it.
    """
    visited = {_directory_key(directory)}
    class_dirs = []
    for name in classes:
        class_dir = directory / name
        usable = class_dir.is_dir() and (follow_links or not class_dir.is_symlink())
        key = _directory_key(class_dir) if usable else None
        if key is not None and key in visited:  # the same folder under two class names
            key = usable = None
        class_dirs.append(class_dir if usable else None)
        visited.add(key)
    found: list[list[str]] = [[] for _ in class_dirs]
    links: list[tuple[int, str]] = []  # links to directories met in the class trees

    def walk(label: int, top: str | Path, follow: bool) -> None:
        for dirpath, dirnames, filenames in os.walk(top, followlinks=follow):
            kept = []
            for d in sorted(dirnames):  # sorted: which path reaches a folder first is fixed
                if d.startswith("."):
                    continue
                full = os.path.join(dirpath, d)
                if not follow and os.path.islink(full):
                    links.append((label, full))
                    continue
                key = _directory_key(full)
                if key is None or key in visited:
                    continue
                visited.add(key)
                kept.append(d)
            dirnames[:] = kept
            rel = os.path.relpath(dirpath, directory)
            found[label] += [os.path.join(rel, f) for f in filenames if _is_image(f)]

    for label, class_dir in enumerate(class_dirs):  # the real trees (os.walk never loops)
        if class_dir is not None:
            walk(label, class_dir, follow=False)
    skipped = 0
    if follow_links:
        for label, link in links:  # then the links, each target entered once
            key = _directory_key(link)
            if key is not None and key not in visited:
                visited.add(key)
                walk(label, link, follow=True)
    else:
        with os.scandir(directory) as entries:
            skipped = len(links) + sum(1 for e in entries if not e.name.startswith(".")
                                       and e.is_symlink() and e.is_dir())
    paths: list[str] = []
    labels: list[int] = []
    for label, files in enumerate(found):
        files.sort()
        paths += files
        labels += [label] * len(files)
    return paths, labels, skipped


class ImageFolderDataset(Dataset):
    """Images in class folders, decoded and transformed one at a time (map-style dataset).

    ``dataset[i]`` is ``(x, y)``: ``x`` float32 ``[3, image_size, image_size]`` normalised with
    ``mean``/``std``, ``y`` the int class index. ``dataset[(i, seed)]`` draws the random
    augmentation from a generator seeded with ``seed`` (what :func:`make_loader` does, so batches
    do not depend on the number of workers); plain ``dataset[i]`` uses torch's global generator.

    The file list is held as one byte string plus offsets (no per-file Python objects), so
    ImageNet's 1.28 M names take ~60 MB and forked workers do not copy them.

    Args:
        directory: the split folder holding one sub-folder per class.
        classes: the class folder names in label order; default: the sorted sub-folders of
            ``directory``. Names missing from ``directory`` simply have no images.
        name: dataset name (``"imagenet"``, ``"imagefolder"``).
        split: split name recorded in the dataset.
        image_size: output side length.
        resize_size: evaluation resize of the shorter side (default ``image_size * 256 / 224``).
        augment: RandomResizedCrop + flip (training) instead of resize + centre crop.
        mean, std: per-channel normalisation constants (default ImageNet's).
        decoder: ``"auto"``, ``"pil"`` or ``"simplejpeg"`` (see :func:`decode_image`).
        follow_links: follow symbolic links to directories, entering each directory once (by
            device and inode); default off (``$SPIKEBRIDGE_FOLLOW_LINKS=1`` turns it on), so a
            link loop cannot make the listing endless or mislabel images.

    Raises:
        DatasetNotFoundError: ``directory`` is missing or holds no images.
        DatasetFormatError: ``directory`` has class folders not in ``classes``, or holds images
            directly instead of in class folders.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        classes: Sequence[str] | None = None,
        *,
        name: str = "imagefolder",
        split: str = "train",
        image_size: int = 224,
        resize_size: int | None = None,
        augment: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        decoder: str = "auto",
        follow_links: bool | None = None,
    ) -> None:
        directory = Path(directory)
        hint = _hint(name)
        if not directory.is_dir():
            raise DatasetNotFoundError(
                name, [directory], [f"{directory} (no such directory)"], hint
            )
        present = _find_classes(directory, _follow_default(follow_links))
        if classes is None:
            classes = present
        else:
            unknown = sorted(set(present) - set(classes))
            if unknown:
                raise DatasetFormatError(
                    f"{directory}: class folder(s) {', '.join(unknown[:5])}"
                    f"{' …' if len(unknown) > 5 else ''} are not among the {len(classes)} "
                    f"training classes"
                )
        if decoder not in ("auto", "pil", "simplejpeg"):
            raise ValueError(f"decoder must be 'auto', 'pil' or 'simplejpeg', got {decoder!r}")
        self.root = directory
        self.name, self.split = name, split
        self.classes = tuple(classes)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != 3 or len(self.std) != 3 or any(not s > 0 for s in self.std):
            raise ValueError(f"mean/std need 3 values with std > 0, got {self.mean}, {self.std}")
        self.augment = bool(augment)
        self.decoder = decoder
        self.transform: TrainTransform | EvalTransform = (
            TrainTransform(image_size) if augment else EvalTransform(image_size, resize_size)
        )
        self.image_size = int(image_size)
        self.follow_links = _follow_default(follow_links)
        paths, labels, skipped = _list_images(directory, self.classes, self.follow_links)
        if paths and skipped:
            warnings.warn(
                f"{directory}: {skipped} symbolic link(s) to directories were not followed, so "
                f"the images below them are not in the dataset; pass follow_links=True (CLI "
                f"--follow-links) to read them",
                stacklevel=2,
            )
        if not paths:
            with os.scandir(directory) as entries:
                loose = sum(1 for e in entries if e.is_file() and _is_image(e.name))
            if loose:
                raise DatasetFormatError(
                    f"{directory}: holds {loose} image(s) directly instead of in one folder per "
                    f"class ({directory}/<class>/<image>); for ImageNet's val/ sort the images "
                    f"into class folders first (see docs/data.md)"
                )
            links = (f"; {skipped} symbolic link(s) to directories were not followed — pass "
                     "follow_links=True (CLI --follow-links) to read them" if skipped else "")
            raise DatasetNotFoundError(
                name,
                [directory],
                [f"{directory} (no {'/'.join(IMAGE_EXTENSIONS)} files in class folders{links})"],
                hint,
            )
        encoded = [os.fsencode(p) for p in paths]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self._offsets[1:])
        self._names = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self._labels = np.asarray(labels, dtype=np.int64)
        self._index = np.arange(len(paths), dtype=np.int64)

    # -- metadata, as in ImageDataset ------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index)

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Always 3 (images are converted to RGB)."""
        return 3

    @property
    def input_size(self) -> tuple[int, int]:
        """Output image size ``(H, W)``."""
        return self.image_size, self.image_size

    @property
    def labels(self) -> torch.Tensor:
        """int64 tensor ``[N]`` of the class indices, in dataset order."""
        return torch.from_numpy(self._labels[self._index])

    def path(self, index: int) -> Path:
        """The file of sample ``index``."""
        i = int(self._index[index])
        start, stop = self._offsets[i], self._offsets[i + 1]
        return self.root / os.fsdecode(self._names[start:stop].tobytes())

    def subset(self, n: int | None, seed: int = 0) -> ImageFolderDataset:
        """A random subset of ``n`` samples (as ``ImageDataset.subset``), sharing the file list."""
        if n is None or n >= len(self):
            return self
        if n < 0:
            raise ValueError(f"subset size must be >= 0 or None, got {n}")
        generator = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(self), generator=generator)[:n].numpy()
        other = copy.copy(self)
        other._index = self._index[pick]
        return other

    # -- loading -------------------------------------------------------------------------------

    def load(self, index: int, seed: int | None = None) -> tuple[torch.Tensor, int]:
        """Decode, transform and normalise sample ``index``; ``seed`` seeds the augmentation.

        Raises:
            CorruptImageError: the file cannot be read or decoded.
        """
        path = self.path(index)
        image = torch.from_numpy(decode_image(path, self.decoder)).permute(2, 0, 1)
        generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        with _one_thread():
            out = self.transform(image, generator)
            x = out.to(torch.float32).div_(255.0)
            mean = torch.tensor(self.mean).view(3, 1, 1)
            std = torch.tensor(self.std).view(3, 1, 1)
            x = x.sub_(mean).div_(std)
        return x, int(self._labels[self._index[index]])

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        if isinstance(key, tuple):
            return self.load(*key)
        return self.load(key)

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset({str(self.root)!r}, {len(self)} images, {self.num_classes} "
            f"classes, {'train' if self.augment else 'eval'} transform {self.image_size})"
        )


# --------------------------------------------------------------------------------------------
# locating ImageNet / an image folder


_SPLIT_FOLDERS = {"train": ("train",), "val": ("val",), "test": ("test", "val")}


def _hint(name: str) -> str:
    layout = "DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG (also .jpg, .jpeg, .png)"
    if name == "imagenet":
        return (
            "ImageNet (ILSVRC2012) cannot be downloaded automatically: get "
            "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org, "
            "extract the training images into one folder per class (n01440764/ …) and sort the "
            f"validation images into the same class folders, then pass --data-dir DIR (or set "
            f"${DATA_DIR_ENV}=DIR) where DIR holds {layout}; DIR may also be the parent of "
            f"imagenet/ or of Kaggle's ILSVRC/Data/CLS-LOC/."
        )
    return f"Pass --data-dir DIR (or set ${DATA_DIR_ENV}=DIR) where DIR holds {layout}."


def _candidates(name: str, root: Path) -> list[Path]:
    if name == "imagenet":
        kaggle = Path("ILSVRC", "Data", "CLS-LOC")
        return [root, root / "imagenet", root / kaggle, root / "imagenet" / kaggle]
    return [root]


def _warn_linked_classes(train_dir: Path) -> None:
    """Warn that linked class folders of ``train_dir`` are missing from the class list."""
    with os.scandir(train_dir) as entries:
        linked = sum(1 for e in entries if not e.name.startswith(".") and e.is_symlink()
                     and e.is_dir())
    if linked:
        warnings.warn(
            f"{train_dir}: {linked} class folder(s) are symbolic links, which are not followed, "
            f"so their classes are missing from the class list; pass follow_links=True (CLI "
            f"--follow-links) to read them",
            stacklevel=3,
        )


def list_streaming_datasets() -> list[str]:
    """Names accepted by :func:`load_streaming_dataset`, sorted."""
    return sorted(STREAMING_DATASETS)


def load_streaming_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    image_size: int = 224,
    resize_size: int | None = None,
    augment: bool | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    decoder: str = "auto",
    follow_links: bool | None = None,
) -> ImageFolderDataset:
    """Open an ImageNet / ImageFolder split for streaming (lists the files, decodes nothing).

    Args:
        name: ``"imagenet"`` or ``"imagefolder"`` (see :func:`list_streaming_datasets`).
        split: ``"train"``, ``"val"``, or ``"test"`` (the ``test/`` folder if there is one, else
            ``val/``; ImageNet's test images are unlabelled, so there it is always ``val/``).
        data_dir: the folder holding ``train/`` and ``val/`` (for ``imagenet`` also its parent
            holding ``imagenet/`` or Kaggle's ``ILSVRC/Data/CLS-LOC/``); default
            ``$SPIKEBRIDGE_DATA_DIR``.
        image_size: output side length (224).
        resize_size: evaluation resize of the shorter side (default ``image_size * 256 / 224``).
        augment: training transform (RandomResizedCrop + flip); default: on for ``"train"``.
        mean, std: normalisation; default ImageNet's (pass your data's for ``imagefolder``).
        decoder: ``"auto"``, ``"pil"`` or ``"simplejpeg"``.
        follow_links: follow symbolic links to directories (with loop detection); default
            off, or ``$SPIKEBRIDGE_FOLLOW_LINKS``.

    Raises:
        ValueError: unknown name or split.
        DatasetNotFoundError: the split folder is not found or holds no images.
        DatasetFormatError: class folders of the split are not among the training classes.
    """
    key = dataset_key(name)
    if key not in STREAMING_DATASETS:
        raise ValueError(
            f"{name!r} is not a streamed dataset ({', '.join(list_streaming_datasets())}); "
            f"in-memory datasets are loaded with spikebridge.data.load_dataset"
        )
    if split not in _SPLIT_FOLDERS:
        raise ValueError(f"unknown split {split!r} for {key!r}; use 'train', 'val' or 'test'")
    folders = ("val",) if (key == "imagenet" and split == "test") else _SPLIT_FOLDERS[split]
    searched: list[Path] = []
    details: list[str] = []
    for root in _search_roots(data_dir, ()):
        for base in _candidates(key, root):
            for folder in folders:
                directory = base / folder
                searched.append(directory)
                if not directory.is_dir():
                    details.append(f"{directory} (no such directory)")
                    continue
                train_dir = base / "train"
                follow = _follow_default(follow_links)
                classes = _find_classes(train_dir, follow) if train_dir.is_dir() else None
                if classes is not None and not follow and directory != train_dir:
                    _warn_linked_classes(train_dir)
                return ImageFolderDataset(
                    directory,
                    classes,
                    name=key,
                    split=split,
                    image_size=image_size,
                    resize_size=resize_size,
                    augment=(split == "train") if augment is None else augment,
                    mean=IMAGENET_MEAN if mean is None else mean,
                    std=IMAGENET_STD if std is None else std,
                    decoder=decoder,
                    follow_links=follow,
                )
    if not searched:
        details.append(f"no directory to search (no --data-dir given and ${DATA_DIR_ENV} unset)")
    raise DatasetNotFoundError(key, searched, details, _hint(key))


# --------------------------------------------------------------------------------------------
# batching


def _item_seeds(seed: int, epoch: int, n: int) -> np.ndarray:
    """One augmentation seed per dataset index, fixed by ``(seed, epoch)``."""
    sequence = np.random.SeedSequence([seed % 2**64, epoch, 1])
    return np.random.default_rng(sequence).integers(0, 2**63 - 1, size=n, dtype=np.int64)


class SeededSampler(Sampler):
    """Yields ``(index, augmentation seed)`` pairs, shuffled per epoch from ``(seed, epoch)``."""

    def __init__(self, n: int, shuffle: bool = False, seed: int = 0) -> None:
        self.n, self.shuffle, self.seed, self.epoch = int(n), shuffle, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next iteration (order and augmentation)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = _epoch_order(self.n, self.shuffle, self.seed, self.epoch)
        seeds = _item_seeds(self.seed, self.epoch, self.n)
        return ((i, int(seeds[i])) for i in order)


def _epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> list[int]:
    """The order one epoch visits ``n`` samples in: a permutation drawn from ``(seed, epoch)``."""
    if not shuffle:
        return list(range(n))
    state = np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1, np.uint64)
    generator = torch.Generator().manual_seed(int(state[0]))
    return torch.randperm(n, generator=generator).tolist()


class _SeededDistributedSampler(DistributedSampler):
    """:class:`DistributedSampler` (this rank's share) yielding ``(index, seed)`` pairs.

    The epoch's order is :class:`SeededSampler`'s, and rank ``r`` of ``R`` takes positions
    ``r, r + R, r + 2R, …`` of it (truncated or padded as :class:`DistributedSampler` does). So
    the ``k``-th batches of ``b`` images of the ``R`` ranks together hold exactly the ``k``-th
    batch of ``R·b`` images of one process: DDP with a per-rank batch of ``b`` sees the same
    global batches as one process.
    """

    def __iter__(self) -> Iterator[tuple[int, int]]:
        n = len(self.dataset)
        order = _epoch_order(n, self.shuffle, self.seed, self.epoch)
        if self.drop_last:
            order = order[: self.total_size]
        else:
            padding = self.total_size - len(order)
            order += (order * math.ceil(padding / max(len(order), 1)))[:padding]
        seeds = _item_seeds(self.seed, self.epoch, n)
        share = order[self.rank : self.total_size : self.num_replicas]
        return ((i, int(seeds[i])) for i in share)


class _Guarded(Dataset):
    """Wraps a dataset so that a corrupt image becomes a record, not a worker exception."""

    def __init__(self, dataset: ImageFolderDataset) -> None:
        self.dataset = dataset

    def __getattr__(self, name: str) -> Any:  # loader.dataset.classes etc. reach the dataset
        if name == "dataset":  # not set yet (during unpickling in a spawned worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, int, tuple[str, str] | None]:
        try:
            x, y = self.dataset.load(*key)
        except CorruptImageError as exc:
            return None, -1, (exc.path, exc.reason)
        return x, y, None


def _collate(items: list[tuple[Any, int, tuple[str, str] | None]]):
    good = [(x, y) for x, y, failure in items if failure is None]
    failures = [failure for _, _, failure in items if failure is not None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), failures
    with _one_thread():  # a memory copy: threads only add hand-offs
        x = torch.stack([x for x, _ in good])
    y = torch.tensor([y for _, y in good], dtype=torch.int64)
    return x, y, failures


class StreamingLoader(EpochCounter, DataLoader):
    """A :class:`DataLoader` yielding ``(x, y)`` batches with the epoch logic of ``BatchLoader``.

    Every ``iter()`` uses the current epoch (shuffle order and augmentation seeds) and then
    advances it; :meth:`set_epoch` replays an epoch. Build it with :func:`make_loader`.

    Attributes:
        skip_corrupt: drop unreadable images (else raise :class:`CorruptImageError`).
        skipped: ``(path, reason)`` of every image dropped so far.
    """

    def __init__(self, *args: Any, skip_corrupt: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip_corrupt = skip_corrupt
        self.skipped: list[tuple[str, str]] = []
        self._epoch = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.set_epoch(self._next_epoch())
        return self._batches()

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        skipped = 0
        for x, y, failures in super().__iter__():
            if failures:
                if not self.skip_corrupt:
                    path, reason = failures[0]
                    raise CorruptImageError(path, reason) from None
                self.skipped += failures
                skipped += len(failures)
            if len(y):
                yield x, y
        if skipped:
            first = self.skipped[-skipped][0]
            warnings.warn(
                f"skipped {skipped} unreadable image(s) this epoch (first: {first}); "
                f"see loader.skipped",
                stacklevel=2,
            )


def make_loader(
    dataset: ImageFolderDataset,
    batch_size: int,
    shuffle: bool = False,
    workers: int = 0,
    seed: int = 0,
    distributed: bool | None = False,
    *,
    drop_last: bool = False,
    skip_corrupt: bool = False,
    pin_memory: bool | None = None,
) -> StreamingLoader:
    """Batch a streamed dataset with worker processes.

    Batches ``(x, y)``: float32 ``[B, 3, S, S]`` and int64 ``[B]``. The shuffle order and every
    image's augmentation are fixed by ``(seed, epoch)`` and the image's index, so any number of
    workers yields the same batches.

    Args:
        dataset: an :class:`ImageFolderDataset` (or anything with ``load(index, seed)``).
        batch_size: images per batch.
        shuffle: a fresh order every epoch.
        workers: decoding processes (0 decodes in the calling process).
        seed: base seed of order and augmentation.
        distributed: use a :class:`DistributedSampler` (this rank's share of every epoch);
            ``None`` does so exactly when ``torch.distributed`` is initialised.
        drop_last: drop the final short batch.
        skip_corrupt: drop unreadable images (warning once per epoch, listing them in
            ``loader.skipped``) instead of raising :class:`CorruptImageError`.
        pin_memory: page-locked batches for fast GPU copies; default: when CUDA is available.

    Raises:
        ValueError: bad ``batch_size``/``workers``, or ``distributed=True`` without an
            initialised process group.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed is None:
        distributed = initialised
    if distributed:
        if not initialised:
            raise ValueError(
                "distributed=True needs torch.distributed.init_process_group() to be called first"
            )
        sampler: Sampler = _SeededDistributedSampler(
            dataset, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
    else:
        sampler = SeededSampler(len(dataset), shuffle=shuffle, seed=seed)
    return StreamingLoader(
        _Guarded(dataset),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        skip_corrupt=skip_corrupt,
    )
