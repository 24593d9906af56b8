"""The ASCII header that starts every AEDAT (jAER / cAER / DV) event file.

An AEDAT file of version 2.0 or 3.x starts with text lines, each beginning with ``#`` and ending
with ``\\r\\n``::

    #!AER-DAT<version>            first line: format version, e.g. 2.0, 3.1, 4.0
    #<anything>                   comments / key-value lines (source, start time, ...)
    #!END-HEADER                  last line (mandatory in 3.x; usually absent in 2.0)

and the binary data follows immediately. For version 2.0 without ``#!END-HEADER`` the data starts
at the first line that does not begin with ``#`` (its first byte is the high byte of a big-endian
address, 0x00 for every DVS128 address, so it cannot be mistaken for ``#``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from spikebridge.dataset_errors import DatasetFormatError

__all__ = ["AedatHeader", "read_aedat_header"]

_MAGIC = b"#!AER-DAT"
_END = b"#!END-HEADER"
_MAX_LINE = 1 << 16  # longest header line accepted (a sane header line is < 1 KiB)


@dataclass(frozen=True)
class AedatHeader:
    """A parsed AEDAT header.

    Attributes:
        version: the version string after ``#!AER-DAT`` (``"2.0"``, ``"3.1"``, ...).
        lines: every header line, decoded as Latin-1, without the line end.
        data_offset: byte offset of the first byte after the header.
        has_end_marker: whether a ``#!END-HEADER`` line closed the header.
    """

    version: str
    lines: tuple[str, ...]
    data_offset: int
    has_end_marker: bool


def read_aedat_header(f: BinaryIO, source) -> AedatHeader:
    """Parse the header of an AEDAT file opened in binary mode, positioned at its start.

    On return ``f`` is positioned at :attr:`AedatHeader.data_offset`.

    Raises:
        DatasetFormatError: the file does not start with ``#!AER-DAT``, a header line is
            longer than 64 KiB or cut by the end of the file, or (version 3.x) the
            ``#!END-HEADER`` line is missing.
    """
    first = f.readline(_MAX_LINE)
    if not first.startswith(_MAGIC):
        shown = first[:24]
        raise DatasetFormatError(
            f"{source}: not an AEDAT file: it starts with {shown!r}, expected a first line "
            f"'#!AER-DAT<version>'"
        )
    if not first.endswith(b"\n"):
        raise DatasetFormatError(f"{source}: AEDAT header line 1 is unterminated or too long")
    version = first[len(_MAGIC) :].strip().decode("latin-1")
    lines = [first.rstrip(b"\r\n").decode("latin-1")]
    has_end = False
    while True:
        pos = f.tell()
        c = f.read(1)
        if c != b"#":
            data_offset = pos
            break
        line = c + f.readline(_MAX_LINE)
        if not line.endswith(b"\n"):
            raise DatasetFormatError(
                f"{source}: AEDAT header line {len(lines) + 1} is unterminated (file ends inside "
                "the header) or longer than 64 KiB"
            )
        lines.append(line.rstrip(b"\r\n").decode("latin-1"))
        if line.rstrip(b"\r\n") == _END:
            has_end = True
            data_offset = f.tell()
            break
    if version.startswith("3") and not has_end:
        raise DatasetFormatError(
            f"{source}: AEDAT {version} header has no '#!END-HEADER' line (the header must end "
            "with it)"
        )
    f.seek(data_offset)
    return AedatHeader(version, tuple(lines), data_offset, has_end)
