"""Reading and writing the IDX array format used by MNIST and Fashion-MNIST.

An IDX file is::

    0x00 0x00 <type byte> <number of dimensions n>
    n big-endian uint32 sizes
    the values, C order, multi-byte values big-endian

with type bytes ``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32
and ``0x0E`` float64. Files may be gzip-compressed; compression is detected from the gzip magic
bytes ``1f 8b``, never from the file name, so a raw file called ``*.gz`` (or a compressed one
without the suffix) is read correctly.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "IdxFormatError",
    "read_idx",
    "write_idx",
]

_GZIP_MAGIC = b"\x1f\x8b"
_HEADER_SIZE = 4

# type byte -> big-endian dtype of the stored values
_TYPE_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# native dtype -> type byte (for writing)
_CODE_OF_DTYPE: dict[np.dtype, int] = {
    dt.newbyteorder("="): code for code, dt in _TYPE_CODES.items()
}


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class IdxFormatError(ValueError):
    """An IDX file is malformed: bad magic, unknown type, wrong length or corrupt gzip stream."""


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-endian, writable numpy array.

    Args:
        path: the file to read.

    Returns:
        An array whose shape is the one stored in the header and whose dtype is the native-endian
        counterpart of the stored type (``uint8``, ``int8``, ``int16``, ``int32``, ``float32`` or
        ``float64``).

    Raises:
        FileNotFoundError: the file does not exist.
        IdxFormatError: the gzip stream is corrupt, the magic number or type code is invalid, or
            the payload is shorter or longer than the header says.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxFormatError(f"{path}: corrupt gzip stream ({exc})") from exc

    if len(raw) < _HEADER_SIZE:
        raise IdxFormatError(
            f"{path}: file too short for an IDX header ({len(raw)} bytes, need at least 4)"
        )
    if raw[0] != 0 or raw[1] != 0:
        raise IdxFormatError(
            f"{path}: bad IDX magic number {raw[:4].hex(' ')} (expected 00 00 <type> <ndim>); "
            "not an IDX file"
        )
    type_code, ndim = raw[2], raw[3]
    if type_code not in _TYPE_CODES:
        known = ", ".join(f"0x{c:02X}" for c in _TYPE_CODES)
        raise IdxFormatError(f"{path}: unknown IDX type code 0x{type_code:02X} (known: {known})")

    dims_end = _HEADER_SIZE + 4 * ndim
    if len(raw) < dims_end:
        raise IdxFormatError(
            f"{path}: truncated IDX header: {ndim} dimensions need {dims_end} bytes, "
            f"file has {len(raw)}"
        )
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))

    dtype = _TYPE_CODES[type_code]
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    expected = dims_end + count * dtype.itemsize
    if len(raw) < expected:
        raise IdxFormatError(
            f"{path}: truncated IDX data: shape {shape} of {dtype.newbyteorder('=').name} needs "
            f"{expected} bytes, file has {len(raw)}"
        )
    if len(raw) > expected:
        raise IdxFormatError(
            f"{path}: {len(raw) - expected} trailing bytes after the IDX data "
            f"(shape {shape} of {dtype.newbyteorder('=').name} needs {expected} bytes)"
        )

    data = np.frombuffer(raw, dtype=dtype, count=count, offset=dims_end)
    # astype copies: the result is writable and native-endian.
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def write_idx(path: str | os.PathLike[str], array: np.ndarray, compress: bool = False) -> None:
    """Write ``array`` as an IDX file, atomically.

    The data is written to a temporary file in the destination directory which then replaces
    ``path`` (``os.replace``), so readers never see a partial file.

    Args:
        path: destination file; its name does not decide the compression.
        array: array-like of dtype uint8, int8, int16, int32, float32 or float64, with at most
            255 dimensions each smaller than 2**32.
        compress: gzip-compress the file (deterministically: the gzip header carries no time).

    Raises:
        ValueError: the dtype is not representable in IDX, or the shape does not fit the header.
    """
    path = Path(path)
    arr = np.asarray(array)
    native = arr.dtype.newbyteorder("=")
    if native not in _CODE_OF_DTYPE:
        supported = ", ".join(dt.name for dt in _CODE_OF_DTYPE)
        raise ValueError(
            f"cannot write {path}: dtype {arr.dtype} has no IDX type code (supported: {supported})"
        )
    if arr.ndim > 255:
        raise ValueError(
            f"cannot write {path}: IDX supports at most 255 dimensions, got {arr.ndim}"
        )
    if any(s >= 2**32 for s in arr.shape):
        raise ValueError(f"cannot write {path}: dimension sizes must be < 2**32, got {arr.shape}")

    header = bytes([0, 0, _CODE_OF_DTYPE[native], arr.ndim])
    dims = np.asarray(arr.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(arr, dtype=native.newbyteorder(">")).tobytes()
    payload = header + dims + body
    if compress:
        payload = gzip.compress(payload, mtime=0)

    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp creates the file 0600; give it the permissions a plain open() would.
            os.fchmod(f.fileno(), 0o666 & ~_current_umask())
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
