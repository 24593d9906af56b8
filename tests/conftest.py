"""Shared test fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def single_torch_thread():
    """One intra-op thread for modules of many tiny tensors: on 2 shared cores, two contended
    threads make each small op ~10× slower. Restores the previous setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
