"""retain_freed_memory: freed large blocks are reused without page faults (issue #10)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from spikebridge import memory_reuse

# In a fresh interpreter: allocate, touch and free a 64 MiB tensor a few times (a run of
# batches), then count the minor page faults of doing it once more. Without retention glibc
# unmaps the block on free and every page faults again (64 MiB / 4 KiB = 16 384 pages).
_PROBE = textwrap.dedent("""
    import resource, sys, torch
    import spikebridge.simulate  # what the command has loaded when it sets retention
    from spikebridge.memory_reuse import retain_freed_memory
    if sys.argv[1] == "retain":
        assert retain_freed_memory(respect_environment=False)
    def touch():
        t = torch.empty(16 << 20)  # 64 MiB of float32
        t.fill_(1.0)
        del t
    for _ in range(3):
        touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    touch()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                          timeout=120, check=True)
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(memory_reuse._glibc() is None, reason="needs glibc's mallopt")
def test_retained_memory_is_reused_without_page_faults():
    default, retained = _faults("default"), _faults("retain")
    assert default > 8000, default  # the control: the second block faulted again
    assert retained < 1000, retained


def test_the_environment_switch_turns_it_off(monkeypatch):
    monkeypatch.setattr(memory_reuse, "_active", False)  # as in a fresh process
    monkeypatch.setattr(memory_reuse, "_status", memory_reuse._status)  # restored afterwards
    monkeypatch.setenv(memory_reuse.ENVIRONMENT_SWITCH, "0")
    assert memory_reuse.retain_freed_memory() is False
    assert "SPIKEBRIDGE_RETAIN_FREED_MEMORY=0" in memory_reuse.retention_status()


def test_without_glibc_it_says_so(monkeypatch):
    monkeypatch.setattr(memory_reuse, "_active", False)
    monkeypatch.setattr(memory_reuse, "_status", memory_reuse._status)
    monkeypatch.delenv(memory_reuse.ENVIRONMENT_SWITCH, raising=False)
    monkeypatch.setattr(memory_reuse, "_glibc", lambda: None)
    assert memory_reuse.retain_freed_memory() is False
    assert "not glibc" in memory_reuse.retention_status()


def test_the_default_mode_follows_memory_retention(monkeypatch):
    """Layer-wise on CPU only when freed memory is retained (docs/benchmarks.md §4): without
    it, its large buffers fault anew every batch and step-by-step is faster."""
    from spikebridge.simulate import preferred_mode

    cpu = torch.device("cpu")
    monkeypatch.setattr(memory_reuse, "_active", False)
    assert (preferred_mode(cpu), preferred_mode(cpu, calibrating=True)) == ("step", "hybrid")
    monkeypatch.setattr(memory_reuse, "_active", True)
    assert (preferred_mode(cpu), preferred_mode(cpu, calibrating=True)) == ("layer", "layer")
    monkeypatch.setattr(memory_reuse, "_active", False)
    assert preferred_mode(torch.device("cuda"), calibrating=True) == "layer"


def _retention_here() -> bool:
    return memory_reuse.retention_active()


def test_launched_processes_keep_the_launching_process_setting(monkeypatch):
    from spikebridge.distributed import launch

    monkeypatch.setattr(memory_reuse, "_active", False)
    assert launch(1, _retention_here, threads=1) is False
    if memory_reuse._glibc() is None:
        pytest.skip("needs glibc's mallopt")
    monkeypatch.setattr(memory_reuse, "_active", True)
    assert launch(1, _retention_here, threads=1) is True
