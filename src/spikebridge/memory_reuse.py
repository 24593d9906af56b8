"""Keep freed memory in the process for reuse, so that large buffers do not page-fault again.

A spiking simulation allocates the same large tensors batch after batch: every IF layer's
membrane potential ``[B, ...]``, the time-invariant first-layer current, and in layer-wise or
hybrid execution (COS) ``[T·B, ...]`` input and output frames of tens of MB per layer. glibc's
``malloc`` serves blocks above its mmap threshold (dynamic, at most 32 MiB) with a fresh
``mmap`` and returns them to the kernel on ``free``; memory at the top of the heap above the
trim threshold is returned too. The next batch's allocation of the same size then gets fresh
pages, and *every first write to every 4 KiB page faults* — measured on the shipped
``fashion_cnn`` at 250 images: ≈ 6 000–12 000 minor faults per step-mode run and ≈ 59 000 per
COS run, about 30 % of the SNN's and 40 % of COS's time at T = 4 (docs/benchmarks.md §4). An
ANN forward suffers much less: its buffers are freed and re-used within one forward pass.

:func:`retain_freed_memory` sets glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` so that
large blocks come from the heap and freed memory stays there for the next batch (where a glibc
caps the threshold below the largest blocks, it sets ``M_MMAP_MAX`` to 0 instead, so that no
block is mmap'd) — what
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` do when set before start-up, and what
jemalloc or tcmalloc (the allocators Intel's PyTorch CPU tuning guide recommends) do by
design. The cost: the process keeps its peak heap instead of giving memory back between
batches. It changes no computed value.

It is **process-wide**, so the library never does it behind a caller's back: the
``spikebridge`` command and the benchmarks call it (``SPIKEBRIDGE_RETAIN_FREED_MEMORY=0``
turns it off there); a program using the Python API can call it once at start-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["ENVIRONMENT_SWITCH", "RETAINED_BLOCK_BYTES", "retain_freed_memory",
           "retention_active", "retention_status"]

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
# blocks up to this size come from the heap; freed heap memory is kept up to twice this
RETAINED_BLOCK_BYTES = 1 << 30
ENVIRONMENT_SWITCH = "SPIKEBRIDGE_RETAIN_FREED_MEMORY"

_status = "not requested"
_active = False


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None  # musl & co.: no mallopt to call
    return libc


def retain_freed_memory(*, respect_environment: bool = True) -> bool:
    """Ask glibc to serve large blocks from the heap and keep freed memory (module docstring).

    Returns whether the setting is in force. A no-op returning ``False`` off glibc (macOS,
    Windows, musl) and, with ``respect_environment``, when ``SPIKEBRIDGE_RETAIN_FREED_MEMORY``
    is ``0``; :func:`retention_status` says which.
    """
    global _status, _active
    if _active:  # already in force (glibc's setting cannot be taken back)
        return True
    if respect_environment and os.environ.get(ENVIRONMENT_SWITCH, "1").strip() == "0":
        _status = f"off ({ENVIRONMENT_SWITCH}=0)"
        return False
    libc = _glibc()
    if libc is None:
        _status = "not available (not glibc); the allocator's defaults apply"
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    # trim first: raising the mmap threshold alone would keep glibc's dynamic trim threshold
    trimmed = libc.mallopt(_M_TRIM_THRESHOLD, 2 * RETAINED_BLOCK_BYTES - 1)
    if libc.mallopt(_M_MMAP_THRESHOLD, RETAINED_BLOCK_BYTES):
        how = f"blocks up to {RETAINED_BLOCK_BYTES >> 20} MiB from the heap"
        mapped = True
    else:
        # A glibc that caps the threshold (at HEAP_MAX_SIZE / 2, 32 MiB on 64-bit) would still
        # map and unmap every larger block -- a T·B frame of a VGG layer is more. Allowing no
        # mmap'd block at all serves every size from the heap instead (glibc still falls back
        # to mmap by itself where the heap cannot grow).
        how = "every block from the heap; this glibc caps the mmap threshold"
        mapped = libc.mallopt(_M_MMAP_MAX, 0)
    if not (trimmed and mapped):
        _status = "refused by this glibc's mallopt; the allocator's defaults apply"
        return False
    _active = True
    _status = f"on: glibc keeps freed memory ({how})"
    return True


def retention_active() -> bool:
    """Whether :func:`retain_freed_memory` has put the setting in force in this process."""
    return _active


def retention_status() -> str:
    """One line saying whether :func:`retain_freed_memory` is in force (for logs and records)."""
    return _status
