"""Several processes, one run: torch.distributed for ``train``, ``evaluate`` and ``compare``.

Two ways to start N processes, both ending in the same code path:

* ``torchrun --nproc_per_node N -m spikebridge train ...`` — torchrun starts the processes and
  sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
* ``spikebridge train --nproc N ...`` — :func:`launch` starts N local processes with
  :func:`torch.multiprocessing.start_processes` and gives each the environment torchrun would.

In each process :func:`process_group` joins the group (``nccl`` for CUDA, ``gloo`` for the CPU)
and picks the process's device (``cuda`` becomes ``cuda:LOCAL_RANK``). Collective helpers
(:func:`all_reduce_sum`, :func:`broadcast_buffers`, :func:`on_main_process`) do nothing in a
single process, so callers need no ``if distributed`` branches. Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from .devices import resolve_device
from .memory_reuse import retain_freed_memory, retention_active

__all__ = [
    "DistributedError",
    "PeerFailedError",
    "all_reduce_max",
    "all_reduce_sum",
    "broadcast_buffers",
    "check_process_count",
    "is_main_process",
    "launch",
    "launched_world_size",
    "on_main_process",
    "process_group",
    "rank",
    "world_size",
]

T = TypeVar("T")

# torchrun's variables; a process started by torchrun or by launch() has all of them
_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(ValueError):
    """A multi-process run that cannot start or continue (bad process count, another rank
    failed, a device per process missing)."""


class WorkerDiedError(DistributedError):
    """A process of the run died without reporting an error (killed, out of memory): the run
    failed, the input was not wrong (exit code 1 on the command line)."""


class PeerFailedError(DistributedError):
    """Raised in the other processes when rank 0 stopped the run (the consequence, not the
    cause: :func:`launch` reports rank 0's own error instead)."""


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the run (1 without an initialised process group)."""
    return dist.get_world_size() if _initialised() else 1


def rank() -> int:
    """This process's rank, 0 … ``world_size() - 1`` (0 without a process group)."""
    return dist.get_rank() if _initialised() else 0


def is_main_process() -> bool:
    """Whether this process is rank 0, the one that prints results and writes files."""
    return rank() == 0


def launched_world_size() -> int | None:
    """``WORLD_SIZE`` when this process was started by torchrun or :func:`launch`, else None."""
    if "WORLD_SIZE" not in os.environ:
        return None
    try:
        size = int(os.environ["WORLD_SIZE"])
    except ValueError as exc:
        raise DistributedError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number of processes"
        ) from exc
    missing = [name for name in _ENV if name not in os.environ]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE is set but {', '.join(missing)} not: start the processes with torchrun "
            "(torchrun --nproc_per_node N -m spikebridge ...) or with --nproc N"
        )
    return size


def check_process_count(nproc: int) -> int:
    """Validate ``--nproc`` (an integer >= 1)."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise DistributedError(f"--nproc must be an integer >= 1 (processes to start), "
                               f"got {nproc!r}")
    return nproc


def _backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"


def _process_device(device: torch.device, local_rank: int) -> torch.device:
    """The device of the process with ``local_rank``: ``cuda`` → ``cuda:LOCAL_RANK``.

    Raises:
        DistributedError: an indexed ``cuda:K`` in a run of several processes (every process
            would use GPU K, which NCCL refuses); give ``cuda`` and ``CUDA_VISIBLE_DEVICES``.
    """
    if device.type == "cuda" and device.index is not None and (launched_world_size() or 1) > 1:
        raise DistributedError(
            f"--device {device} names one GPU for {launched_world_size()} processes; use "
            "--device cuda (process k takes GPU k) and choose the GPUs with "
            "CUDA_VISIBLE_DEVICES"
        )
    if device.type != "cuda" or device.index is not None:
        return device
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DistributedError(
            f"process with local rank {local_rank} needs its own GPU but this machine has "
            f"{count}; start at most {count} processes per machine with --device cuda"
        )
    return torch.device("cuda", local_rank)


@contextlib.contextmanager
def process_group(device: str | torch.device | None = "cpu") -> Iterator[torch.device]:
    """Join the run's process group for the duration of the block; yield this process's device.

    In a process started by torchrun or :func:`launch` (``WORLD_SIZE`` set) this initialises
    ``torch.distributed`` (``nccl`` on CUDA, ``gloo`` on the CPU), maps ``cuda`` to
    ``cuda:LOCAL_RANK``, silences ``stdout`` on every rank but 0 (results are printed once) and
    destroys the group on exit. Otherwise, or when a group is already initialised, it only
    resolves ``device`` (:func:`spikebridge.devices.resolve_device`).
    """
    device = resolve_device(device)
    size = launched_world_size()
    if size is None or _initialised():
        yield device
        return
    local_rank = int(os.environ["LOCAL_RANK"])
    device = _process_device(device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = _backend(device)
    dist.init_process_group(backend, **({"device_id": device} if backend == "nccl" else {}))
    try:
        quiet = contextlib.nullcontext() if dist.get_rank() == 0 else _stdout_silenced()
        with quiet:
            yield device
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(values: torch.Tensor, op: dist.ReduceOp) -> torch.Tensor:
    if world_size() == 1:
        return values
    work = values.detach().to(_collective_device(), copy=True)
    dist.all_reduce(work, op=op)
    return work.to(values.device)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of ``values`` over all processes (a new tensor; ``values`` itself in a
    single process). Integer tensors sum exactly."""
    return _all_reduce(values, dist.ReduceOp.SUM)


def all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of ``values`` over all processes."""
    return _all_reduce(values, dist.ReduceOp.MAX)


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) into every process's ``model``.

    Without SyncBatchNorm each rank updates its running statistics from its own share of the
    last batch; evaluating rank 0's values everywhere makes every rank evaluate the model rank 0
    saves.
    """
    if world_size() == 1:
        return
    device = _collective_device()
    for buffer in model.buffers():
        work = buffer.detach().to(device, copy=True)
        dist.broadcast(work, src=0)
        with torch.no_grad():
            buffer.copy_(work)


def on_main_process(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 only; every rank returns once it has finished.

    Rank 0 re-raises what ``fn`` raised; the other ranks then raise :class:`DistributedError`
    naming it, instead of waiting forever for a rank that has stopped. Returns ``fn()`` on rank
    0 and None elsewhere.
    """
    if world_size() == 1:
        return fn()
    result, failure = None, None
    if is_main_process():
        try:
            result = fn()
        except BaseException as exc:
            failure = f"{type(exc).__name__}: {exc}"
            _broadcast_failure(failure)
            raise
    _broadcast_failure(failure)
    return result


def _broadcast_failure(failure: str | None) -> None:
    message = [failure]
    dist.broadcast_object_list(message, src=0)
    if message[0] is not None and not is_main_process():
        raise PeerFailedError(f"rank 0 stopped the run: {message[0]}")


# --------------------------------------------------------------------------------------------
# launching N local processes (what `--nproc N` does)


def launch(nproc: int, fn: Callable[..., T], *args: Any, threads: int | None = None) -> T:
    """Run ``fn(*args)`` in ``nproc`` new local processes as torchrun would; return rank 0's
    result.

    Each process gets torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
    ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), so ``fn`` joins the group with
    :func:`process_group`. The rendezvous store is created here on a port the system picks (no
    race for a "free" port). ``fn`` and ``args`` must be picklable (processes are spawned).
    Each process uses ``threads`` intra-op threads (default: the CPU cores divided among the
    processes, unless ``OMP_NUM_THREADS`` is set), and retains freed memory when this process
    does (:mod:`spikebridge.memory_reuse`; spawned processes start afresh).

    Raises:
        DistributedError: ``nproc`` < 1, or a process died without reporting an error.
        Exception: the first exception raised in any process (by time), re-raised here with the
            failing rank's traceback attached as a note.
    """
    nproc = check_process_count(nproc)
    if threads is None and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, (os.cpu_count() or 1) // nproc)
    store = dist.TCPStore("127.0.0.1", 0, nproc, is_master=True, wait_for_workers=False)
    with tempfile.TemporaryDirectory(prefix="spikebridge-ranks-") as results:
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port),
               "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
               # the processes connect to the store above instead of rank 0 hosting one
               "TORCHELASTIC_USE_AGENT_STORE": "True"}
        # torch logs a warning per process it stops after one failed; the failure itself is
        # what the caller needs, and it is raised below
        spawn_log = logging.getLogger("torch.multiprocessing.spawn")
        level = spawn_log.level
        spawn_log.setLevel(logging.ERROR)
        try:
            mp.start_processes(_run_rank, args=(fn, args, env, threads, results,
                                                retention_active()),
                               nprocs=nproc, join=True, start_method="spawn")
        except mp.ProcessExitedException as exc:
            _raise_first_failure(Path(results), nproc, exc)
        except mp.ProcessRaisedException as exc:  # pragma: no cover - _run_rank catches all
            raise DistributedError(str(exc)) from exc
        finally:
            spawn_log.setLevel(level)
        outcome = _read_outcome(Path(results), 0)
    del store
    if outcome is None:  # pragma: no cover - rank 0 always reports when it exits with 0
        raise DistributedError("rank 0 finished without reporting a result")
    return outcome[2]


def _run_rank(index: int, fn: Callable[..., Any], args: tuple, env: dict[str, str],
              threads: int | None, results: str, retain_memory: bool = False) -> None:
    """Body of one spawned process: torchrun's environment, then ``fn(*args)``; the outcome
    (result or exception) goes to ``results/<rank>.pkl`` for :func:`launch`."""
    os.environ.update(env, RANK=str(index), LOCAL_RANK=str(index))
    if threads is not None:
        torch.set_num_threads(threads)
    if retain_memory:  # as the launching process does (spawned processes start afresh)
        retain_freed_memory()
    try:
        outcome: tuple = ("ok", time.time(), fn(*args))
    except BaseException as exc:  # reported to the launching process, which re-raises it
        exc.add_note(f"raised in rank {index} of {env['WORLD_SIZE']}:\n"
                     + "".join(traceback.format_exception(exc)))
        outcome = ("error", time.time(), exc)
        _write_outcome(results, index, outcome)
        raise SystemExit(1) from None
    _write_outcome(results, index, outcome)


def _write_outcome(results: str, index: int, outcome: tuple) -> None:
    try:
        data = pickle.dumps(outcome)
    except Exception:  # an unpicklable result or exception: keep its text
        kind, when, value = outcome
        text = f"{type(value).__name__}: {value}" if kind == "error" else repr(value)
        data = pickle.dumps((kind, when, DistributedError(f"rank {index}: {text}")
                             if kind == "error" else text))
    path = Path(results) / f"{index}.pkl"
    path.with_suffix(".tmp").write_bytes(data)
    path.with_suffix(".tmp").replace(path)


def _read_outcome(results: Path, index: int) -> tuple | None:
    path = results / f"{index}.pkl"
    if not path.exists():
        return None
    return pickle.loads(path.read_bytes())


def _raise_first_failure(results: Path, nproc: int, exited: mp.ProcessExitedException) -> None:
    failures = [o for o in (_read_outcome(results, i) for i in range(nproc))
                if o is not None and o[0] == "error"]
    if not failures:
        raise WorkerDiedError(
            f"process {exited.error_index} of {nproc} died with exit code {exited.exit_code} "
            "without reporting an error (killed, out of memory?)"
        ) from None
    # The cause, not its echoes: a rank told that rank 0 failed, or one whose peer hung up, fails
    # later or as a consequence; among the rest the earliest failure is the cause.
    def consequence(exc: BaseException) -> bool:
        return isinstance(exc, PeerFailedError) or isinstance(exc, dist.DistError)

    first = min(failures, key=lambda outcome: (consequence(outcome[2]), outcome[1]))
    raise first[2]
