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
# "capped" plays a glibc whose mallopt refuses a 1 GiB mmap threshold (glibc caps it at
# HEAP_MAX_SIZE / 2 = 32 MiB unless its heaps are larger): retention must still hold.
# The probe also reports how many bytes were mmap'd while the block was alive (mallinfo2's
# hblkhd, glibc >= 2.33) and glibc's version, so that a failure says where the block came from.
_PROBE = textwrap.dedent("""
    import ctypes, resource, sys, torch
    import spikebridge.simulate  # what the command has loaded when it sets retention
    from spikebridge import memory_reuse
    libc = ctypes.CDLL("libc.so.6")
    if sys.argv[1] == "capped":
        real = memory_reuse._glibc()
        def mallopt(parameter, value):
            if parameter == memory_reuse._M_MMAP_THRESHOLD and value > 32 << 20:
                return 0
            return real.mallopt(parameter, value)
        capped = type("CappedGlibc", (), {})()
        capped.mallopt = mallopt
        memory_reuse._glibc = lambda: capped
    if sys.argv[1] != "default":
        assert memory_reuse.retain_freed_memory(respect_environment=False)
    class Info(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]
    def mapped_bytes():
        if not hasattr(libc, "mallinfo2"):
            return -1
        libc.mallinfo2.restype = Info
        return libc.mallinfo2().hblkhd
    def touch():
        t = torch.empty(16 << 20)  # 64 MiB of float32
        t.fill_(1.0)
        mapped = mapped_bytes()
        del t
        return mapped
    for _ in range(3):
        touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    mapped = touch()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    print(faults, mapped, libc.gnu_get_libc_version().decode(), memory_reuse.retention_status())
""")


def _faults(mode: str) -> tuple[int, str]:
    """(minor faults of the last 64 MiB touch, the probe's whole report line)."""
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                          timeout=120, check=True)
    line = done.stdout.strip().splitlines()[-1]
    return int(line.split()[0]), f"{mode}: faults, bytes mmap'd, glibc, status = {line}"


def _fewest_faults(mode: str, tries: int = 3) -> tuple[int, list[str]]:
    """The best of a few fresh processes: one process whose heap cannot grow in place (a
    mapping placed right above it by address randomisation) says nothing of retention."""
    reports = []
    for _ in range(tries):
        faults, report = _faults(mode)
        reports.append(report)
        if faults < 1000:
            break
    return min(int(r.split("= ")[1].split()[0]) for r in reports), reports


@pytest.mark.skipif(memory_reuse._glibc() is None, reason="needs glibc's mallopt")
@pytest.mark.parametrize("mode", ["retain", "capped"])
def test_retained_memory_is_reused_without_page_faults(mode):
    default, control = _faults("default")
    assert default > 8000, control  # the control: the second block faulted again
    retained, reports = _fewest_faults(mode)
    assert retained < 1000, "\n".join([control, *reports])


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
