"""The ways dataset files fail: not found where searched, or found but malformed — for an image
of a streamed dataset, undecodable (:class:`CorruptImageError`).

A leaf module: every reader (IDX, CIFAR, ImageFolder, event streams) raises these, so they sit
below all of them.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CorruptImageError", "DatasetFormatError", "DatasetNotFoundError"]


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset were not found in any of the searched directories.

    Attributes:
        dataset: the dataset name.
        searched: the directories that were searched, in order.
    """

    def __init__(self, dataset: str, searched: list[Path], details: list[str], hint: str) -> None:
        self.dataset = dataset
        self.searched = list(searched)
        self._details = list(details)
        self._hint = hint
        if searched:
            lines = [f"dataset {dataset!r} not found; searched:"] + [f"  - {d}" for d in details]
        else:
            lines = [f"dataset {dataset!r} not found" + (f": {details[0]}" if details else "")]
        lines.append(hint)
        super().__init__("\n".join(lines))

    def __str__(self) -> str:
        return str(self.args[0])

    @property
    def details(self) -> list[str]:
        """What was wrong with each searched directory, in the order searched."""
        return list(self._details)

    def __reduce__(self):  # keep the exception picklable despite the custom __init__
        return type(self), (self.dataset, self.searched, self._details, self._hint)


class DatasetFormatError(ValueError):
    """Dataset files were found but their contents are inconsistent (counts, shapes, labels)."""


class CorruptImageError(DatasetFormatError):
    """An image file cannot be read or decoded.

    Attributes:
        path: the file.
        reason: what went wrong.
    """

    # Its public home, where it was defined before: tracebacks and pickles name it there
    # (spikebridge.data.imagefolder re-exports it).
    __module__ = "spikebridge.data.imagefolder"

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path}: cannot read this image ({reason})")

    def __reduce__(self):  # keep the exception picklable despite the custom __init__
        return type(self), (self.path, self.reason)
