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


# deflate cannot compress better than about 1032:1, so a gzip stream of n bytes inflates to at
# most ~1032·n bytes: a header declaring more than that is a lie, refused before inflating.
_MAX_DEFLATE_RATIO = 1032
_CHUNK = 1 << 20  # most decompressed bytes produced per step
_INPUT_CHUNK = 1 << 16  # compressed bytes read per step


def _describe(shape: tuple[int, ...], dtype: np.dtype) -> str:
    return f"shape {shape} of {dtype.newbyteorder('=').name}"


def _parse_type(path: Path, head: bytes) -> tuple[np.dtype, int]:
    """Check the 4-byte IDX prefix; return (stored dtype, number of dimensions)."""
    if len(head) < _HEADER_SIZE:
        raise IdxFormatError(
            f"{path}: file too short for an IDX header ({len(head)} bytes, need at least 4)"
        )
    if head[0] != 0 or head[1] != 0:
        raise IdxFormatError(
            f"{path}: bad IDX magic number {head[:4].hex(' ')} (expected 00 00 <type> <ndim>); "
            "not an IDX file"
        )
    type_code, ndim = head[2], head[3]
    if type_code not in _TYPE_CODES:
        known = ", ".join(f"0x{c:02X}" for c in _TYPE_CODES)
        raise IdxFormatError(f"{path}: unknown IDX type code 0x{type_code:02X} (known: {known})")
    return _TYPE_CODES[type_code], ndim


def _parse_dims(path: Path, dims: bytes, ndim: int, available: int) -> tuple[int, ...]:
    dims_end = _HEADER_SIZE + 4 * ndim
    if len(dims) < 4 * ndim:
        raise IdxFormatError(
            f"{path}: truncated IDX header: {ndim} dimensions need {dims_end} bytes, "
            f"file has {available}"
        )
    return tuple(int(s) for s in np.frombuffer(dims, dtype=">u4", count=ndim))


def _finish(buffer: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Big-endian buffer -> native-endian array of ``shape``, in place (no second copy)."""
    if not dtype.isnative:
        buffer.byteswap(inplace=True)
    return buffer.view(dtype.newbyteorder("=")).reshape(shape)


class _Inflater:
    """Incremental gzip decompression (multi-member, CRC-checked) whose output never exceeds
    what the caller asks for: memory stays bounded by the request, whatever the input."""

    def __init__(self, path: Path, handle) -> None:
        self.path, self.handle = path, handle
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""  # input read past the end of a member: the next member's start

    def _corrupt(self, why: object) -> IdxFormatError:
        return IdxFormatError(f"{self.path}: corrupt gzip stream ({why})")

    def _next_member(self) -> bool:
        """After a gzip member ended: start the next one; False at the end of the file."""
        rest = self.inflater.unused_data
        while len(rest) < 2:
            more = self.handle.read(_INPUT_CHUNK)
            if not more:
                break
            rest += more
        if not rest:
            return False
        if rest[:2] == _GZIP_MAGIC:
            self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._pending = rest
            return True
        # gzip(1) tolerates zero padding after the last member; anything else is garbage
        while rest:
            if rest.count(0) != len(rest):
                raise self._corrupt("trailing garbage after the last gzip member")
            rest = self.handle.read(_INPUT_CHUNK)
        return False

    def read_into(self, out: memoryview) -> int:
        """Decompress into ``out`` (at most ``len(out)`` bytes); return how many were written,
        fewer only at the end of the stream."""
        filled = 0
        while filled < len(out):
            if self.inflater.eof and not self._pending:
                if not self._next_member():
                    break
            data = self._pending or self.inflater.unconsumed_tail
            self._pending = b""
            if not data:
                data = self.handle.read(_INPUT_CHUNK)
            try:
                chunk = self.inflater.decompress(data, min(len(out) - filled, _CHUNK))
            except zlib.error as exc:
                raise self._corrupt(exc) from exc
            if not chunk and not data and not self.inflater.eof:
                raise self._corrupt("truncated: the file ends inside the compressed data")
            out[filled:filled + len(chunk)] = chunk
            filled += len(chunk)
        return filled

    def read(self, n: int) -> bytes:
        buffer = bytearray(n)
        return bytes(buffer[: self.read_into(memoryview(buffer))])


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-endian, writable numpy array.

    Parsing is bounded: the sizes the header declares are checked against the file before
    anything is allocated (raw: against the file size; gzip: against the most a stream of that
    size can inflate to), and a gzip stream is inflated incrementally and abandoned as soon as it
    yields one byte more than the header declares, so a decompression bomb costs at most the
    declared size plus one chunk of memory.

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
    with open(path, "rb") as handle:
        file_size = os.fstat(handle.fileno()).st_size
        if handle.read(2) == _GZIP_MAGIC:
            handle.seek(0)
            return _read_gzip(path, handle, file_size)
        handle.seek(0)
        return _read_raw(path, handle, file_size)


def _read_raw(path: Path, handle, file_size: int) -> np.ndarray:
    dtype, ndim = _parse_type(path, handle.read(_HEADER_SIZE))
    shape = _parse_dims(path, handle.read(4 * ndim), ndim, file_size)
    dims_end = _HEADER_SIZE + 4 * ndim
    count = int(np.prod(shape, dtype=object)) if shape else 1
    expected = dims_end + count * dtype.itemsize
    if file_size < expected:
        raise IdxFormatError(
            f"{path}: truncated IDX data: {_describe(shape, dtype)} needs {expected} bytes, "
            f"file has {file_size}"
        )
    if file_size > expected:
        raise IdxFormatError(
            f"{path}: {file_size - expected} trailing bytes after the IDX data "
            f"({_describe(shape, dtype)} needs {expected} bytes)"
        )
    buffer = np.empty(count, dtype=dtype)
    view = memoryview(buffer).cast("B")
    got = 0
    while got < len(view):  # the file may change under us: never read past the buffer
        n = handle.readinto(view[got:])
        if not n:
            raise IdxFormatError(f"{path}: truncated IDX data (the file shrank while read)")
        got += n
    return _finish(buffer, dtype, shape)


def _read_gzip(path: Path, handle, file_size: int) -> np.ndarray:
    inflater = _Inflater(path, handle)
    dtype, ndim = _parse_type(path, inflater.read(_HEADER_SIZE))
    dims = inflater.read(4 * ndim)
    shape = _parse_dims(path, dims, ndim, _HEADER_SIZE + len(dims))
    dims_end = _HEADER_SIZE + 4 * ndim
    count = int(np.prod(shape, dtype=object)) if shape else 1
    expected = dims_end + count * dtype.itemsize
    most = file_size * _MAX_DEFLATE_RATIO + 1024
    if expected > most:
        raise IdxFormatError(
            f"{path}: the header declares {_describe(shape, dtype)} ({expected} bytes), more "
            f"than a {file_size}-byte gzip stream can hold (at most ~{most} bytes): the file is "
            "truncated or its header is corrupt"
        )
    buffer = np.empty(count, dtype=dtype)
    got = inflater.read_into(memoryview(buffer).cast("B"))
    if got < count * dtype.itemsize:
        raise IdxFormatError(
            f"{path}: truncated IDX data: {_describe(shape, dtype)} needs {expected} bytes, "
            f"the gzip stream holds {dims_end + got}"
        )
    if inflater.read(1):  # also drains the stream's end: CRC and length are checked
        raise IdxFormatError(
            f"{path}: trailing data after the IDX data: the gzip stream inflates to more than "
            f"the {expected} bytes its header declares ({_describe(shape, dtype)}); stopped "
            "there (a corrupt file or a decompression bomb)"
        )
    return _finish(buffer, dtype, shape)


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
