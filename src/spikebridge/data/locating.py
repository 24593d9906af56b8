"""Where dataset files are looked for: the search roots and the first directory holding them.

``--data-dir`` (the ``data_dir`` argument) is authoritative when given; otherwise
``$SPIKEBRIDGE_DATA_DIR`` is searched, then the loader's system directories. A loader says which
directories under a root to try and how to tell that one holds its files;
:func:`_first_directory_with_data` tries them in order and, when none does, raises a
:class:`~spikebridge.data.errors.DatasetNotFoundError` listing every directory searched and why
each failed. Every on-disk loader (IDX, CIFAR, ImageFolder) uses these.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from spikebridge.dataset_errors import DatasetNotFoundError

T = TypeVar("T")

__all__ = ["DATA_DIR_ENV"]

DATA_DIR_ENV = "SPIKEBRIDGE_DATA_DIR"
"""Environment variable naming a directory searched for dataset files."""


def _find_file(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` or ``directory/stem.gz``, whichever exists (raw name first)."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _search_roots(data_dir: str | Path | None, system_dirs: tuple[Path, ...]) -> list[Path]:
    """``data_dir`` alone when given (an explicit directory is never silently replaced by
    another copy of the data); otherwise ``$SPIKEBRIDGE_DATA_DIR``, then ``system_dirs``."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    roots: list[Path] = []
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    if env:
        roots.append(Path(env).expanduser())
    roots.extend(system_dirs)
    return roots


def _first_directory_with_data(
    name: str,
    candidates: Iterable[Path],
    probe: Callable[[Path], tuple[T | None, str]],
    hint: str,
) -> T:
    """``probe``'s result for the first existing candidate directory it accepts, else a
    :class:`DatasetNotFoundError` listing every directory searched and why each failed.

    ``probe(directory)`` returns ``(result, "")`` on success or ``(None, why)``; directories
    that do not exist, or were already searched, are not probed.
    """
    searched: list[Path] = []
    details: list[str] = []
    for directory in candidates:
        if directory in searched:
            continue
        searched.append(directory)
        if not directory.is_dir():
            details.append(f"{directory} (no such directory)")
            continue
        result, why = probe(directory)
        if result is not None:
            return result
        details.append(f"{directory} ({why})")
    if not searched:
        details.append(f"no directory to search (no --data-dir given and ${DATA_DIR_ENV} unset)")
    raise DatasetNotFoundError(name, searched, details, hint)
