r"""The fused integrate-and-fire update: one pass over memory, not four (docs/methods.md §2.1).

For the common neuron — unsigned, reset by subtraction — one time-step is, per element,

.. math::
    m = v + c\;(+\,e),\qquad s = [m \ge \theta],\qquad
    v \leftarrow m - \theta s,\qquad x \leftarrow A s

(§2.1; ``e`` is ECC's residual-elimination current, §7.4; ``A`` the spike value, θ for
weighted spikes). The eager reference (:func:`spikebridge.neurons.if_step_`) runs this as four
in-place ATen kernels, each streaming the whole layer through memory; here a small C loop does
it in one pass, parallelised with OpenMP over ``torch.get_num_threads()`` threads.

**Bit-identical to the eager reference.** Every value the loop computes is one IEEE float
operation that the eager kernels also perform, in the same precision and order: ``v + c`` (then
``+ e``), the comparison, ``m - θ`` where the spike fired (eager computes ``m - θ·s`` and
``θ·1 = θ``, ``θ·0 = 0`` are exact, so fused multiply-add contraction cannot change a bit either),
and ``A`` or ``+0``. θ, ``A`` and ``e`` are rounded to the tensor's dtype first, as ATen does
with a Python scalar. The C code is compiled without ``-ffast-math`` and with
``-ffp-contract=off``. ``tests/test_if_kernel.py`` checks the bits on random currents,
thresholds and potentials, including potentials landing exactly on θ.

**Build and cache.** The C source (``spikebridge/kernels/if_kernel.c``, package data) is
compiled once per machine with the system C compiler (``$CC``, else ``cc``/``gcc``; about half a
second) into a shared library cached under
``$SPIKEBRIDGE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/spikebridge`` or ``~/.cache/spikebridge``),
named by the hash of source, flags and compiler, written atomically. Without a compiler, or with
``SPIKEBRIDGE_IF_KERNEL=0``, :func:`fused_if_step_` reports ``False`` and the caller runs the
eager kernels — same bits, only slower.

It covers float32/float64 CPU tensors with identical dense layouts (contiguous or
channels_last). Signed neurons, hard reset and COS's extrema bookkeeping stay on the eager path.

**COS's first pre-simulation** (docs/methods.md §4.5 stage 1) shares this library:
:func:`fused_presimulation` runs the ρ soft-reset steps above for every neuron with ``v`` held
in cache, and writes only :math:`v(\rho)`, the spike count ``N`` (rounded from
:math:`\sum_t A s(t) / A`, as :func:`spikebridge.neurons.integrate_and_fire` counts) and
Theorem 1's offset sign (§4.2) — one pass instead of about twenty; same bits as the eager
``integrate_and_fire(..., track_count=True)`` plus ``offset_sign``, by the same argument.

**A residual block's output layer, layer-wise** (:func:`fused_if_scan_`): all T steps of the
layer with the two branches of the residual connection summed in registers, ``m = v + (a + b)``
— the eager ``neuron(a + b)``'s rounding, without the ``[T·B, ...]`` sum going through memory
(:func:`spikebridge.network.fuse_residual_currents` hands the neuron both branches).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from importlib import resources
from pathlib import Path

import torch

__all__ = ["fused_if_scan_", "fused_if_step_", "fused_presimulation", "kernel_available",
           "kernel_status"]


def _source() -> str:
    """The kernel library's C source: package data (``spikebridge/kernels/if_kernel.c``, in the
    wheel too), one translation unit, read when it is built; its text is part of the cache key."""
    return (resources.files("spikebridge") / "kernels" / "if_kernel.c").read_text(encoding="utf-8")


_FLAGS = ["-O3", "-fPIC", "-shared", "-fopenmp", "-ffp-contract=off", "-fno-fast-math",
          "-fno-trapping-math",
          "-std=c99"]
# this CPU's vector width (AVX2 instead of the x86-64 baseline's SSE2: the IF step ≈ 12 % faster
# here); no FMA can appear (-ffp-contract=off), so the bits are the same. Tried first; a
# compiler that refuses it builds with _FLAGS alone. The cache key then names the CPU.
_NATIVE = ["-march=native"]

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_status = "not built yet"
_FUNCTIONS: dict[torch.dtype, tuple[ctypes._CFuncPtr, type]] = {}
_PRESIMULATE: dict[torch.dtype, ctypes._CFuncPtr] = {}
_SCAN: dict[torch.dtype, ctypes._CFuncPtr] = {}


def _cache_dir() -> Path:
    if os.environ.get("SPIKEBRIDGE_CACHE_DIR"):
        return Path(os.environ["SPIKEBRIDGE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spikebridge"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compiler_version(compiler: str) -> str:
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True,
                              timeout=30).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def _cpu_identity() -> str:
    """What ``-march=native`` compiles for: the CPU's model and feature flags (Linux), so that a
    cache shared between machines never hands one CPU another's instructions."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            lines = [line for line in info if line.startswith(("model name", "flags",
                                                                "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        import platform

        return f"{platform.processor()} {platform.machine()}"


def _build() -> ctypes.CDLL | None:
    """Compile (or find in the cache) and load the kernel library; ``None`` if impossible."""
    global _status
    if os.environ.get("SPIKEBRIDGE_IF_KERNEL", "1").strip().lower() in ("0", "off", "false", "no"):
        _status = "disabled by SPIKEBRIDGE_IF_KERNEL=0 (eager IF update)"
        return None
    if sys.platform == "win32":
        _status = "not supported on Windows (eager IF update)"
        return None
    compiler = _compiler()
    if compiler is None:
        _status = "no C compiler found (set CC); eager IF update"
        return None
    try:
        source_text = _source()
    except OSError as exc:  # an installation without its package data
        _status = f"kernel source missing ({exc}); eager IF update"
        return None
    failures = []
    for flags in ([*_FLAGS, *_NATIVE], _FLAGS):
        key = hashlib.sha256("\0".join([
            source_text, *flags, _compiler_version(compiler), sys.platform, os.uname().machine,
            _cpu_identity() if _NATIVE[0] in flags else ""]).encode()).hexdigest()[:16]
        target = _cache_dir() / f"if_kernel-{key}.so"
        try:
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                    source = Path(tmp) / "if_kernel.c"
                    source.write_text(source_text)
                    built = Path(tmp) / "if_kernel.so"
                    subprocess.run([compiler, *flags, str(source), "-o", str(built)],
                                   check=True, capture_output=True, timeout=120)
                    os.replace(built, target)  # atomic: a concurrent build writes the same
            library = ctypes.CDLL(str(target))
            break
        except (OSError, subprocess.SubprocessError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
    else:
        _status = f"build failed ({'; '.join(failures)}); eager IF update"
        return None
    for dtype, name, real in ((torch.float32, "spikebridge_if_step_f32", ctypes.c_float),
                              (torch.float64, "spikebridge_if_step_f64", ctypes.c_double)):
        fn = getattr(library, name)
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                       real, real, real, ctypes.c_int, ctypes.c_int]
        _FUNCTIONS[dtype] = (fn, real)
        pre = getattr(library, name.replace("if_step", "presimulate"))
        pre.restype = None
        pre.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                        real, real, ctypes.c_int]
        _PRESIMULATE[dtype] = pre
        scan = getattr(library, name.replace("if_step", "if_scan"))
        scan.restype = None
        scan.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                         ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                         ctypes.c_int64, real, real, real, ctypes.c_int, ctypes.c_int]
        _SCAN[dtype] = scan
    built_for = "this CPU (-march=native)" if flags is not _FLAGS else "the baseline ISA"
    _status = f"fused C kernel ({target}, built for {built_for})"
    return library


def _load() -> ctypes.CDLL | None:
    global _library, _status
    if _library is None and _status == "not built yet":
        with _lock:
            if _library is None and _status == "not built yet":
                _library = _build()
    return _library


def kernel_available() -> bool:
    """Whether the fused kernel is built and loaded (builds it on first call)."""
    return _load() is not None


def kernel_status() -> str:
    """One line saying which IF update runs and why (for logs and benchmark records)."""
    _load()
    return _status


def _call(name: str, fn: ctypes._CFuncPtr, arguments: tuple) -> None:
    """Run a kernel; under torch.profiler it shows as one op named ``name``."""
    if torch.autograd.profiler._is_profiler_enabled:
        with torch.profiler.record_function(name):
            fn(*arguments)
    else:
        fn(*arguments)


def _same_dense_layout(v: torch.Tensor, *others: torch.Tensor) -> bool:
    dense = v.is_contiguous() or (v.dim() == 4 and v.is_contiguous(
        memory_format=torch.channels_last)) or (v.dim() == 5 and v.is_contiguous(
            memory_format=torch.channels_last_3d))
    if not dense:
        return False
    # the stride of a size-1 dim never moves an element (a folded batch of one has any)
    strides = [s for s, n in zip(v.stride(), v.shape, strict=True) if n != 1]
    return all(t.shape == v.shape and t.dtype == v.dtype and t.device == v.device
               and [s for s, n in zip(t.stride(), t.shape, strict=True) if n != 1] == strides
               for t in others)


def fused_if_step_(
    v: torch.Tensor, current: torch.Tensor, threshold: float, x_out: torch.Tensor,
    value: float, extra: float = 0.0,
) -> bool:
    r"""One soft-reset, unsigned IF step in place, fused (§2.1); ``False`` if not applicable.

    ``v`` ← :math:`m - \theta s`, ``x_out`` ← :math:`A s` with :math:`m = v + c (+ e)`,
    :math:`s = [m \ge \theta]`, ``A`` = ``value``. Applicable to CPU float32/float64 tensors
    of one dense layout, outside autograd; otherwise nothing is touched and the caller runs the
    eager reference. Same bits as the eager reference (module docstring).
    """
    if v.device.type != "cpu" or v.dtype not in (torch.float32, torch.float64):
        return False
    if not _same_dense_layout(v, current, x_out):
        return False
    if torch.is_grad_enabled() and (v.requires_grad or current.requires_grad):
        return False
    if _load() is None:
        return False
    fn, real = _FUNCTIONS[v.dtype]
    arguments = (v.data_ptr(), current.data_ptr(), x_out.data_ptr(), v.numel(), real(threshold),
                 real(value), real(extra), 1 if extra else 0, torch.get_num_threads())
    _call("spikebridge::fused_if_step", fn, arguments)
    return True


def fused_if_scan_(
    v: torch.Tensor, currents: torch.Tensor, threshold: float, output: torch.Tensor,
    steps: int, value: float, extra: float = 0.0, *, constant: bool,
    addends: torch.Tensor | None = None,
) -> bool:
    r"""``steps`` soft-reset IF steps of a whole layer in one pass (§2.1); ``False`` if not
    applicable (then nothing is touched).

    For :math:`t = 1..T`: :math:`m = v + c(t) (+ e)`, :math:`s = [m \ge \theta]`,
    :math:`v \leftarrow m - \theta s`, ``output[t-1]`` ← :math:`A s` — exactly
    :func:`fused_if_step_` applied ``steps`` times (same bits), each block of neurons keeping
    ``v`` in cache across the steps. Its gain is the ``addends`` case (a residual sum that
    never goes through memory: 3.0 instead of 4.8 ms for 8 × 64 × 16 × 32 × 32 neurons, 2
    threads); without an addend it is no faster than stepping :func:`fused_if_step_`, which
    streams better, so :func:`spikebridge.neurons.integrate_and_fire` uses it only then.
    ``currents``: ``[T', B, ...]`` frames (or ``[B, ...]`` with ``constant=True``);
    ``addends``: a second current, frames like ``currents`` (a residual connection's other
    branch): :math:`c(t)` is then ``currents[t] + addends[t]``, summed first as the eager code
    sums them, never written to memory. ``output``: ``[T'', B, ...]`` with
    ``T'', T' >= steps``; ``v`` is updated in place. Applicable to CPU float32/float64 tensors
    whose frames share ``v``'s dense layout, outside autograd.
    """
    if v.device.type != "cpu" or v.dtype not in (torch.float32, torch.float64) or steps < 1:
        return False
    if output.dim() != v.dim() + 1 or output.shape[0] < steps:
        return False
    inputs = [currents] if addends is None else [currents, addends]
    if not constant and any(t.dim() != v.dim() + 1 or t.shape[0] < steps for t in inputs):
        return False
    frames = inputs if constant else [t[0] for t in inputs]
    if not _same_dense_layout(v, *frames, output[0]):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in (v, *inputs)):
        return False
    if _load() is None:
        return False
    fn, real = _SCAN[v.dtype], _FUNCTIONS[v.dtype][1]
    stride = (lambda t: 0) if constant else (lambda t: t.stride(0))
    arguments = (v.data_ptr(), currents.data_ptr(), stride(currents),
                 None if addends is None else addends.data_ptr(),
                 0 if addends is None else stride(addends), output.data_ptr(),
                 output.stride(0), steps, v.numel(), real(threshold), real(value), real(extra),
                 1 if extra else 0, torch.get_num_threads())
    _call("spikebridge::fused_if_scan", fn, arguments)
    return True


def fused_presimulation(
    currents: torch.Tensor, threshold: float, v0: torch.Tensor, steps: int, *, constant: bool,
    value: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    r"""COS's first pre-simulation in one pass (docs/methods.md §4.5); ``None`` if not applicable.

    Per neuron, ``steps`` (ρ) soft-reset IF steps from ``v0`` over the first ρ frames of
    ``currents`` (``[T', B, ...]``, or ``[B, ...]`` with ``constant=True``), kept in registers:

    .. math::
        m = v + c(t),\qquad s = [m \ge \theta],\qquad v \leftarrow m - \theta s,

    returning ``(v(ρ), N, sign)`` in ``v0``'s layout: ``N = round(Σ_t A s(t) / A)`` as
    :func:`spikebridge.neurons.integrate_and_fire` counts (``A`` = ``value``, θ by default) and
    Theorem 1's offset sign (:func:`spikebridge.methods.cos.offset_sign`, int8): −1 if
    ``N ≥ 1`` and ``v(ρ) < 0``, +1 if ``N < ρ`` and ``v(ρ) ≥ θ``, else 0. Same bits as the eager
    ``integrate_and_fire(..., track_count=True)`` plus ``offset_sign`` (same float operations in
    the same order, θ and ``A`` rounded to the dtype; ``tests/test_if_kernel.py``). Applicable to
    CPU float32/float64 ``v0`` of one dense layout whose current frames share that layout,
    outside autograd; otherwise the caller runs the eager path.
    """
    if v0.device.type != "cpu" or v0.dtype not in (torch.float32, torch.float64):
        return None
    if steps < 1 or (not constant and (currents.dim() != v0.dim() + 1
                                       or currents.shape[0] < steps)):
        return None
    frame = currents if constant else currents[0]
    if not _same_dense_layout(v0, frame):
        return None
    if torch.is_grad_enabled() and (v0.requires_grad or currents.requires_grad):
        return None
    if _load() is None:
        return None
    v = torch.empty_like(v0)
    count = torch.empty_like(v0)
    sign = torch.empty_like(v0, dtype=torch.int8)
    fn, real = _PRESIMULATE[v0.dtype], _FUNCTIONS[v0.dtype][1]
    value = threshold if value is None else value
    arguments = (v0.data_ptr(), currents.data_ptr(), 0 if constant else currents.stride(0),
                 steps, v.data_ptr(), count.data_ptr(), sign.data_ptr(), v0.numel(),
                 real(threshold), real(value), torch.get_num_threads())
    _call("spikebridge::fused_presimulation", fn, arguments)
    return v, count, sign
