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

**Build and cache.** The C source is compiled once per machine with the system C compiler
(``$CC``, else ``cc``/``gcc``; about half a second) into a shared library cached under
``$SPIKEBRIDGE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/spikebridge`` or ``~/.cache/spikebridge``),
named by the hash of source, flags and compiler, written atomically. Without a compiler, or with
``SPIKEBRIDGE_IF_KERNEL=0``, :func:`fused_if_step_` reports ``False`` and the caller runs the
eager kernels — same bits, only slower.

It covers float32/float64 CPU tensors with identical dense layouts (contiguous or
channels_last). Signed neurons, hard reset and COS's extrema bookkeeping stay on the eager path.
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
from pathlib import Path

import torch

__all__ = ["fused_if_step_", "kernel_available", "kernel_status"]

_SOURCE = r"""
#include <stdint.h>

/* One soft-reset IF step per element (spikebridge docs/methods.md section 2.1):
   m = v + c (+ e); s = [m >= theta] in {0, 1}; v = m - theta s; x = value s.
   Branch-free, so that the compiler vectorizes it; theta s and value s are exact. */
#define SPIKEBRIDGE_IF_BODY(REAL, EXTRA)                                                   \
    {                                                                                      \
        REAL m = v[i] + c[i];                                                              \
        EXTRA                                                                              \
        REAL s = (REAL)(m >= theta);                                                       \
        v[i] = m - theta * s;                                                              \
        x[i] = value * s;                                                                  \
    }

#define SPIKEBRIDGE_IF_STEP(NAME, REAL)                                                    \
void NAME(REAL *v, const REAL *c, REAL *x, int64_t n, REAL theta, REAL value, REAL extra,   \
          int use_extra, int threads) {                                                    \
    if (threads > 1 && n >= 16384) {                                                       \
        if (use_extra) {                                                                   \
            _Pragma("omp parallel for simd schedule(static) num_threads(threads)")         \
            for (int64_t i = 0; i < n; ++i) SPIKEBRIDGE_IF_BODY(REAL, m = m + extra;)      \
        } else {                                                                           \
            _Pragma("omp parallel for simd schedule(static) num_threads(threads)")         \
            for (int64_t i = 0; i < n; ++i) SPIKEBRIDGE_IF_BODY(REAL, )                    \
        }                                                                                  \
    } else if (use_extra) {                                                                \
        _Pragma("omp simd")                                                                \
        for (int64_t i = 0; i < n; ++i) SPIKEBRIDGE_IF_BODY(REAL, m = m + extra;)          \
    } else {                                                                               \
        _Pragma("omp simd")                                                                \
        for (int64_t i = 0; i < n; ++i) SPIKEBRIDGE_IF_BODY(REAL, )                        \
    }                                                                                      \
}

SPIKEBRIDGE_IF_STEP(spikebridge_if_step_f32, float)
SPIKEBRIDGE_IF_STEP(spikebridge_if_step_f64, double)
"""

_FLAGS = ["-O3", "-fPIC", "-shared", "-fopenmp", "-ffp-contract=off", "-fno-fast-math",
          "-fno-trapping-math",
          "-std=c99"]

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_status = "not built yet"
_FUNCTIONS: dict[torch.dtype, tuple[ctypes._CFuncPtr, type]] = {}


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
    key = hashlib.sha256("\0".join([_SOURCE, *_FLAGS, _compiler_version(compiler),
                                    sys.platform, os.uname().machine]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"if_kernel-{key}.so"
    try:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                source = Path(tmp) / "if_kernel.c"
                source.write_text(_SOURCE)
                built = Path(tmp) / "if_kernel.so"
                subprocess.run([compiler, *_FLAGS, str(source), "-o", str(built)], check=True,
                               capture_output=True, timeout=120)
                os.replace(built, target)  # atomic: a concurrent build writes the same bytes
        library = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as exc:
        _status = f"build failed ({type(exc).__name__}: {exc}); eager IF update"
        return None
    for dtype, name, real in ((torch.float32, "spikebridge_if_step_f32", ctypes.c_float),
                              (torch.float64, "spikebridge_if_step_f64", ctypes.c_double)):
        fn = getattr(library, name)
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                       real, real, real, ctypes.c_int, ctypes.c_int]
        _FUNCTIONS[dtype] = (fn, real)
    _status = f"fused C kernel ({target})"
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


def _same_dense_layout(v: torch.Tensor, *others: torch.Tensor) -> bool:
    dense = v.is_contiguous() or (v.dim() == 4 and v.is_contiguous(
        memory_format=torch.channels_last)) or (v.dim() == 5 and v.is_contiguous(
            memory_format=torch.channels_last_3d))
    if not dense:
        return False
    return all(t.shape == v.shape and t.stride() == v.stride() and t.dtype == v.dtype
               and t.device == v.device for t in others)


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
    if torch.autograd.profiler._is_profiler_enabled:  # visible to torch.profiler as one op
        with torch.profiler.record_function("spikebridge::fused_if_step"):
            fn(*arguments)
    else:
        fn(*arguments)
    return True
