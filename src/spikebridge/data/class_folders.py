"""Listing an image-folder split: its class folders and the images in them, safe from link loops.

A split folder holds one sub-folder per class; the images of a class are the files ending in
:data:`IMAGE_EXTENSIONS` (any letter case) anywhere below its folder. Names starting with ``.``
are ignored. Symbolic links to directories are not followed unless asked to (``follow_links``,
default :data:`FOLLOW_LINKS_ENV`): then each directory is entered once, by device and inode, so a
link loop neither lists images endlessly nor puts them under the wrong class. Links to image
files are always read.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

__all__ = ["FOLLOW_LINKS_ENV", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
"""File name endings recognised as images (compared case-insensitively)."""

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
