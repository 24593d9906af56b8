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

This module owns decoding (:func:`decode_image`, with the :data:`MAX_IMAGE_PIXELS` bound),
:class:`ImageFolderDataset`, finding the split folders (:func:`load_streaming_dataset`) and the
registry records of ``imagenet`` and ``imagefolder``. The rest lives in modules below it and is
re-exported here: listing a class-folder tree in :mod:`spikebridge.data.class_folders`, the
transforms in :mod:`spikebridge.data.image_transforms`, order and augmentation seeds in
:mod:`spikebridge.data.seeded_sampling`, batching (:func:`make_loader`,
:class:`StreamingLoader`) in :mod:`spikebridge.data.streaming_loader`.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

# the redundant aliases re-export names used from here (the CLI, tests) but not in this module
from spikebridge.data.class_folders import (
    FOLLOW_LINKS_ENV as FOLLOW_LINKS_ENV,
)
from spikebridge.data.class_folders import (
    IMAGE_EXTENSIONS,
    _find_classes,
    _follow_default,
    _is_image,
    _list_images,
    _warn_linked_classes,
)
from spikebridge.data.image_transforms import (
    EvalTransform,
    TrainTransform,
    center_crop,
    random_resized_crop_box,
    resize_shorter_side,
    resized_crop,
)
from spikebridge.data.locating import DATA_DIR_ENV, _search_roots
from spikebridge.data.registry import DatasetInfo, dataset_key, dataset_names, register_dataset
from spikebridge.data.seeded_sampling import SeededSampler
from spikebridge.data.seeded_sampling import (
    _SeededDistributedSampler as _SeededDistributedSampler,
)
from spikebridge.data.streaming_loader import StreamingLoader, _one_thread, make_loader
from spikebridge.dataset_errors import CorruptImageError, DatasetFormatError, DatasetNotFoundError

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

_JPEG_MAGIC = b"\xff\xd8"


# --------------------------------------------------------------------------------------------
# decoding (in this module, not one of its own: the pixel bound is this module's
# MAX_IMAGE_PIXELS, read at every decode, so setting it here bounds decode_image)


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
# the dataset


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


def list_streaming_datasets() -> list[str]:
    """Names accepted by :func:`load_streaming_dataset`, sorted."""
    return dataset_names(streaming=True)


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
    if key not in list_streaming_datasets():
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
# registry

_STREAMED_TRAIN = ("RandomResizedCrop(S, scale 0.08-1, ratio 3/4-4/3) + horizontal flip, "
                   "normalise")
_STREAMED_TEST = "resize the shorter side to S·256/224, centre crop S×S, normalise"


def _streamed_info(name: str, num_classes: int | None) -> DatasetInfo:
    return DatasetInfo(name, num_classes, 3, None, IMAGENET_MEAN, IMAGENET_STD, "streamed", 0,
                       _STREAMED_TRAIN, _STREAMED_TEST,
                       loader=partial(load_streaming_dataset, name))


register_dataset(_streamed_info("imagenet", 1000))
register_dataset(_streamed_info("imagefolder", None))  # the classes are the data's folders
