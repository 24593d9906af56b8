"""Shared by the timing benchmarks: the model, its test batches, a wall-clock timer and the
allocator setting they run under."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from spikebridge.checkpoint import load_checkpoint
from spikebridge.data import BatchLoader, load_dataset


def model_and_batches(
    model_dir: Path, limit: int, batch_size: int
) -> tuple[nn.Module, list[torch.Tensor]]:
    """The checkpoint's ANN and a fixed random subset of its test set, as input batches."""
    ann, config = load_checkpoint(model_dir)
    test = load_dataset(config["dataset"], "test").subset(limit, seed=0)
    return ann, [x for x, _ in BatchLoader(test, batch_size)]


def wall_seconds(fn: Callable[[torch.Tensor], object], batches: list[torch.Tensor]) -> float:
    """Seconds to call ``fn`` on every batch, after one warm-up call on the first batch."""
    fn(batches[0])
    start = time.perf_counter()
    for x in batches:
        fn(x)
    return time.perf_counter() - start


def allocator_setting(retain: bool) -> str:
    """Apply (``retain``) spikebridge's freed-memory retention for this whole process — ANN
    baselines and SNN alike — and describe the allocator setting in force, for the record.

    Older spikebridge versions (the "before" runs) lack the module; the same glibc setting is
    then given by ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` at start-up.
    """
    env = {k: os.environ[k] for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
           if k in os.environ}
    if not retain:
        return f"glibc defaults{' + ' + str(env) if env else ''}"
    try:
        from spikebridge.memory_reuse import retain_freed_memory, retention_status
    except ImportError:
        return f"no spikebridge.memory_reuse in this version; environment {env or 'none'}"
    retain_freed_memory(respect_environment=False)
    return retention_status()
