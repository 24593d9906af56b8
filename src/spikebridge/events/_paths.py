"""Helpers shared by the event dataset classes: a compact file table and file-name ordering."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

__all__ = ["PathTable", "list_files", "natural_key"]

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key putting ``a_2`` before ``a_10`` (digit runs compare as numbers)."""
    return tuple(int(part) if part.isdigit() else part for part in _DIGITS.split(name))


def list_files(directory: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Names of the regular files in ``directory`` with one of ``suffixes`` (lower-case compare),
    hidden files excluded, in natural order."""
    names = []
    with os.scandir(directory) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            if entry.name.lower().endswith(suffixes) and entry.is_file():
                names.append(entry.name)
    names.sort(key=natural_key)
    return names


class PathTable:
    """Many file paths under one base directory stored as one byte blob plus offsets.

    A list of 60 000 ``Path`` objects costs ~10 MB of Python objects (and is copied page by page
    into every forked worker as reference counts change); this costs the UTF-8 bytes alone.
    """

    def __init__(self, base: Path, relative: list[str]) -> None:
        self.base = Path(base)
        encoded = [os.fsencode(r) for r in relative]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        if encoded:
            np.cumsum([len(e) for e in encoded], out=self._offsets[1:])
        self._blob = b"".join(encoded)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> Path:
        a, b = int(self._offsets[i]), int(self._offsets[i + 1])
        return self.base / os.fsdecode(self._blob[a:b])
