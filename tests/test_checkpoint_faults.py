"""Fault injection (docs/reliability.md): crashes between any two file operations of a commit,
real SIGKILLs at random instants, disk full, locks, and bounded IDX parsing of hostile files.

Every test here must stay fast (tiny models, not real training, except a 64-sample digits run).
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikebridge import checkpoint as ckpt_module
from spikebridge.checkpoint import (
    CURRENT_LINK,
    LOCK_FILE,
    SNAPSHOTS_DIR,
    CheckpointError,
    CheckpointLockedError,
    CheckpointWriter,
    StaleLockWarning,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from spikebridge.data import IdxFormatError, read_idx
from spikebridge.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("single_torch_thread")


# ---------------------------------------------------------------------------------------------
# crash between any two file operations


class _Crash(BaseException):
    """The simulated death of the process (not an Exception: no handler may swallow it)."""


class _InjectingFS(ckpt_module._FileOps):
    """Logs every file operation of the checkpoint writer; with ``crash_at=k`` the k-th one
    "kills the process": it and every later operation raise :class:`_Crash` (a dead process
    cleans nothing up). A crash at a ``write`` first writes half the data (a torn write)."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.crash_at, self.log, self.dead = crash_at, [], False

    def _step(self, name: str, arg: object) -> None:
        if self.dead or len(self.log) == self.crash_at:
            self.dead = True
            raise _Crash(f"simulated crash at {name}({arg})")
        self.log.append((name, arg))

    def write(self, fd, data):
        if not self.dead and len(self.log) == self.crash_at:
            os.write(fd, bytes(data[: len(data) // 2]))
        self._step("write", fd)
        super().write(fd, data)

    def fsync(self, fd):
        # logged as a crash point but not performed: a killed process's writes survive in the
        # page cache, so fsync changes nothing here (it only matters for power loss), and it
        # costs milliseconds each. The SIGKILL test below runs with real fsyncs.
        self._step("fsync", fd)

    def close(self, fd):
        try:
            self._step("close", fd)
        finally:
            os.close(fd)  # the kernel closes a dead process's files


def _logged(name: str):
    def method(self, *args):
        self._step(name, os.path.basename(str(args[-1])))
        return getattr(ckpt_module._FileOps, name)(self, *args)
    return method


for _name in ("mkdir", "open_new", "open_dir", "rename", "replace", "symlink", "unlink",
              "rmdir"):
    setattr(_InjectingFS, _name, _logged(_name))

_TINY_CONFIG = {"architecture": "tiny", "num_classes": 3, "in_channels": 1,
                "activation": {"kind": "relu"}}
_EPOCHS = 2


def _tiny_training(directory, *, resume: bool, per_epoch: list | None = None) -> dict:
    """A tiny model trained _EPOCHS epochs (SGD + momentum, BatchNorm statistics), committing a
    checkpoint with its optimizer state after every epoch; ``resume`` continues from whatever
    epoch the committed checkpoint says. Returns the final state dict."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    start = 0
    with CheckpointWriter(directory, resume=resume) as writer:
        if resume:
            ck = read_checkpoint(directory, train_state=True)
            model.load_state_dict(ck.state_dict)
            optimizer.load_state_dict(ck.train_state["optimizer"])
            start = ck.epoch
        for epoch in range(start, _EPOCHS):
            gen = torch.Generator().manual_seed(100 + epoch)
            for _ in range(2):
                x, y = torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            writer.commit(model, {**_TINY_CONFIG, "epochs_completed": epoch + 1},
                          {"epoch": epoch + 1, "optimizer": optimizer.state_dict()})
            if per_epoch is not None:
                per_epoch.append({k: v.clone() for k, v in model.state_dict().items()})
    return model.state_dict()


@pytest.fixture
def scratch(tmp_path):
    """Where the crash sweeps write: tmpfs when there is one (a process's death does not depend
    on the file system, and journaled metadata operations on a busy disk cost milliseconds)."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        path = tempfile.mkdtemp(prefix="spikebridge-faults-", dir=shm)
        yield Path(path)
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _assert_tidy(directory) -> None:
    """One snapshot, no temporary files or links, no lock left behind."""
    names = {p.name for p in directory.iterdir()}
    assert not {n for n in names if n.startswith(".") and n != LOCK_FILE}, names
    assert LOCK_FILE not in names
    assert len(list((directory / SNAPSHOTS_DIR).iterdir())) == 1


def test_crash_between_any_two_file_operations(scratch, monkeypatch):
    """Crash the writer at every file operation of every commit of a 2-epoch run: afterwards the
    directory holds exactly the last committed epoch (verified), and resuming (or, before the
    first commit, restarting) gives bit-identical final weights to an uninterrupted run."""
    counting = _InjectingFS()
    monkeypatch.setattr(ckpt_module, "_fs", counting)
    per_epoch: list = []
    reference = _tiny_training(scratch / "reference", resume=False, per_epoch=per_epoch)
    ops = list(counting.log)
    commit_points = [i for i, (name, arg) in enumerate(ops)
                     if name == "replace" and arg == CURRENT_LINK]
    assert len(commit_points) == _EPOCHS
    kinds = {name for name, _ in ops}
    assert {"mkdir", "open_new", "write", "fsync", "close", "open_dir", "rename", "symlink",
            "replace", "unlink", "rmdir"} <= kinds, kinds
    _assert_tidy(scratch / "reference")

    loaded_epochs: dict[int, int] = {}  # epoch found after the crash -> number of crash points
    for k in range(len(ops)):
        directory = scratch / f"crash-{k:03d}"
        monkeypatch.setattr(ckpt_module, "_fs", _InjectingFS(crash_at=k))
        with pytest.raises(_Crash):
            _tiny_training(directory, resume=False)
        monkeypatch.setattr(ckpt_module, "_fs", ckpt_module._FileOps())  # the restart
        committed = sum(point < k for point in commit_points)  # epochs published before op k
        if committed == 0:
            with pytest.raises(CheckpointError, match="holds no checkpoint"):
                read_checkpoint(directory)
            final = _tiny_training(directory, resume=False)  # leftovers don't count as content
        else:
            ck = read_checkpoint(directory, train_state=True)
            assert ck.verified, f"crash at op {k} {ops[k]}"
            assert ck.epoch == committed == ck.train_state["epoch"] == \
                ck.config["epochs_completed"], f"crash at op {k} {ops[k]}"
            assert _same(ck.state_dict, per_epoch[committed - 1]), f"crash at op {k} {ops[k]}"
            final = _tiny_training(directory, resume=True)
        loaded_epochs[committed] = loaded_epochs.get(committed, 0) + 1
        assert _same(final, reference), f"crash at op {k} {ops[k]}: resume diverged"
        _assert_tidy(directory)
    print(f"\ncrash points: {len(ops)} file operations over {_EPOCHS} commits, 0 failures; "
          f"epoch committed when the crash hit -> crash points: {loaded_epochs}")


def test_crash_during_real_training_then_resume(scratch, monkeypatch):
    """The same with `spikebridge.train` itself (digits, 64 samples): crashes just before and
    just after the second epoch's commit point; --resume reproduces the uninterrupted run bit
    for bit (test accuracy included)."""
    cfg = TrainConfig(dataset="digits", epochs=3, batch_size=32, lr=0.05, seed=1,
                      train_subset=64)
    quiet = {"progress": False, "log": lambda _m: None}
    counting = _InjectingFS()
    monkeypatch.setattr(ckpt_module, "_fs", counting)
    full = train(cfg, scratch / "full", **quiet)
    reference, _ = load_checkpoint(scratch / "full")
    ops = list(counting.log)
    points = [i for i, (name, arg) in enumerate(ops) if name == "replace" and arg == CURRENT_LINK]
    crash_ops = {"just before the commit point": points[1],
                 "just after the commit point": points[1] + 1}
    for what, k in crash_ops.items():
        directory = scratch / what.replace(" ", "-")
        monkeypatch.setattr(ckpt_module, "_fs", _InjectingFS(crash_at=k))
        with pytest.raises(_Crash):
            train(cfg, directory, **quiet)
        monkeypatch.setattr(ckpt_module, "_fs", ckpt_module._FileOps())
        expected_epoch = sum(p < k for p in points)
        model, config = load_checkpoint(directory)
        assert config["epochs_completed"] == expected_epoch, what
        resumed = train(cfg, directory, resume=True, **quiet)
        model, _ = load_checkpoint(directory)
        assert _same(model.state_dict(), reference.state_dict()), what
        assert resumed["history"][-1]["test_accuracy"] == full["history"][-1]["test_accuracy"]
        _assert_tidy(directory)


# ---------------------------------------------------------------------------------------------
# real SIGKILL at random instants

_WEIGHTS_SRC = """
def weights_for(epoch):
    gen = torch.Generator().manual_seed(epoch)
    return {"w": torch.randn(64, 64, generator=gen), "b": torch.full((64,), float(epoch))}
CONFIG = {"architecture": "tiny", "num_classes": 3, "in_channels": 1,
          "activation": {"kind": "relu"}}
"""

# A fork server: imports torch + spikebridge once, then for every line on stdin forks a writer
# that continues the checkpoint from its committed epoch and commits epoch after epoch until it
# is killed; reports the writer's pid and then its wait status.
_SERVER = """
import os, sys, traceback, warnings
import torch
torch.set_num_threads(1)
from spikebridge.checkpoint import CheckpointWriter, read_checkpoint
""" + _WEIGHTS_SRC + """
directory = sys.argv[1]
with CheckpointWriter(sys.argv[2]) as warm_up:  # lazy initialisation happens here, once
    warm_up.commit(weights_for(0), {**CONFIG, "epochs_completed": 0}, {"epoch": 0}, epoch=0)
import time
started = time.perf_counter()
with CheckpointWriter(sys.argv[2], resume=True) as warm_up:
    for epoch in range(1, 6):
        warm_up.commit(weights_for(epoch), {**CONFIG, "epochs_completed": epoch}, {"epoch": epoch},
                       epoch=epoch)
read_checkpoint(sys.argv[2], train_state=True)
print((time.perf_counter() - started) / 5, flush=True)  # seconds per commit on this machine
for _line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            warnings.simplefilter("ignore")  # the stale lock of the killed writer is taken over
            epoch = read_checkpoint(directory).epoch
            with CheckpointWriter(directory, resume=True) as writer:
                while True:
                    epoch += 1
                    writer.commit(weights_for(epoch), {**CONFIG, "epochs_completed": epoch},
                                  {"epoch": epoch}, epoch=epoch)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(3)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""


def test_sigkill_at_random_instants(tmp_path):
    trials = 60
    namespace: dict = {"torch": torch}
    exec(_WEIGHTS_SRC, namespace)
    weights_for, config = namespace["weights_for"], namespace["CONFIG"]
    directory = tmp_path / "ckpt"
    save_checkpoint(directory, weights_for(0), {**config, "epochs_completed": 0}, {"epoch": 0})
    stderr = open(tmp_path / "server.err", "w+")  # noqa: SIM115 - read back on failure
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(directory),
                               str(tmp_path / "warm-up")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                              text=True)
    line = server.stdout.readline()
    assert line.strip(), open(tmp_path / "server.err").read()
    window = 3 * float(line)  # kill within ~3 commits' time (fork + read + lock come first)
    rng = random.Random(20240609)
    last, advanced, mid_commit, stale_locks, failures = 0, 0, 0, 0, []
    trial = 0
    try:
        # at least `trials` kills; on a machine busy enough that too few of them landed after
        # a commit (the coverage asserted below), more kills with a longer window, up to 4×
        while trial < trials or (trial < 4 * trials
                                 and (advanced < trials // 5 or mid_commit < 1)):
            server.stdin.write("go\n")
            server.stdin.flush()
            pid = int(server.stdout.readline())
            time.sleep(rng.uniform(0.0, window if trial < trials else 3 * window))
            trial += 1
            os.kill(pid, signal.SIGKILL)
            status = int(server.stdout.readline())
            if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
                stderr.seek(0)
                failures.append(f"trial {trial}: writer stopped by itself: {stderr.read()}")
                break
            leftovers = sorted(map(str, ckpt_module._garbage(directory)))
            mid_commit += bool(leftovers)
            stale_locks += (directory / LOCK_FILE).exists()
            try:
                ck = read_checkpoint(directory, train_state=True)  # verifies every hash
                expected = weights_for(ck.epoch)
                problems = []
                if not ck.verified:
                    problems.append("unverified")
                if not (ck.epoch >= last and ck.train_state["epoch"] == ck.epoch
                        == ck.config["epochs_completed"]):
                    problems.append(f"epoch {ck.epoch} after {last}, state {ck.train_state}")
                if not _same(ck.state_dict, expected):
                    problems.append("weights do not belong to the committed epoch")
                if sorted(map(str, ckpt_module._garbage(directory))) != leftovers:
                    problems.append("the read changed the directory (reads never delete)")
                if problems:
                    failures.append(f"trial {trial}: {problems}")
                advanced += ck.epoch > last
                last = ck.epoch
            except CheckpointError as exc:
                failures.append(f"trial {trial}: does not load: {exc}")
    finally:
        server.stdin.close()
        server.wait(timeout=30)
        stderr.close()
    print(f"\nSIGKILL trials: {trial} (kill window {window * 1000:.0f} ms), failures: "
          f"{len(failures)}, epochs reached: {last}, trials that committed >= 1 epoch: "
          f"{advanced}, killed mid-commit (leftovers): {mid_commit}, stale locks taken over: "
          f"{stale_locks}")
    assert not failures, failures
    assert advanced >= trials // 5 and mid_commit >= 1 and stale_locks >= 1
    with warnings.catch_warnings():  # the last killed writer's lock may still be there
        warnings.simplefilter("ignore", StaleLockWarning)
        with CheckpointWriter(directory, resume=True) as writer:  # a clean run tidies up
            writer.commit(weights_for(last + 1), {**config, "epochs_completed": last + 1},
                          {"epoch": last + 1})
    _assert_tidy(directory)


# ---------------------------------------------------------------------------------------------
# disk full, locks


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    state0 = {"w": torch.arange(4.0)}
    save_checkpoint(tmp_path, state0, {**_TINY_CONFIG, "epochs_completed": 1}, {"epoch": 1})

    class FullDisk(ckpt_module._FileOps):
        def write(self, fd, data):
            os.write(fd, bytes(data[:100]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt_module, "_fs", FullDisk())
    with pytest.raises(CheckpointError, match=r"could not write the checkpoint of epoch 2 .*: "
                       r"No space left on device; the previous checkpoint \(epoch 1\) is intact"):
        save_checkpoint(tmp_path, {"w": torch.ones(1000)},
                        {**_TINY_CONFIG, "epochs_completed": 2}, {"epoch": 2})
    monkeypatch.setattr(ckpt_module, "_fs", ckpt_module._FileOps())
    ck = read_checkpoint(tmp_path, train_state=True)
    assert ck.verified and ck.epoch == 1 and torch.equal(ck.state_dict["w"], state0["w"])
    _assert_tidy(tmp_path)


_HOLDER = textwrap.dedent("""
    import fcntl, json, os, socket, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
    print("locked", flush=True)
    sys.stdin.read()
""")


def test_lock_held_by_a_live_process_is_refused(tmp_path, capsys):
    directory = tmp_path / "run"
    directory.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(directory / LOCK_FILE)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointLockedError, match=f"locked by another spikebridge run "
                           f"\\(pid {holder.pid} on "):
            CheckpointWriter(directory)
        from spikebridge.cli import main
        assert main(["train", "--out", str(directory), "--dataset", "digits", "--quiet"]) == 2
        assert f"pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    # its owner is gone: the lock is stale and taken over with a warning
    with pytest.warns(StaleLockWarning, match=f"pid {holder.pid} .* no longer runs"), \
            CheckpointWriter(directory) as writer:
        with pytest.raises(CheckpointLockedError):  # one writer per directory, in-process too
            CheckpointWriter(directory)
        writer.commit({"w": torch.zeros(2)}, {**_TINY_CONFIG, "epochs_completed": 1})
    assert not (directory / LOCK_FILE).exists()


def test_stale_lock_of_a_dead_pid_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(
        f'{{"pid": {dead.pid}, "host": "{os.uname().nodename}", "started": "earlier"}}')
    with pytest.warns(StaleLockWarning, match=f"stale lock .*pid {dead.pid}"):
        save_checkpoint(tmp_path, {"w": torch.zeros(2)}, {**_TINY_CONFIG, "epochs_completed": 1})
    assert read_checkpoint(tmp_path).epoch == 1 and not (tmp_path / LOCK_FILE).exists()


# ---------------------------------------------------------------------------------------------
# bounded IDX parsing


def _gzip(header: bytes, zeros: int) -> bytes:
    """A gzip stream of ``header`` followed by ``zeros`` zero bytes, built in 1 MiB steps."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts, chunk = [packer.compress(header)], bytes(1 << 20)
    for _ in range(zeros >> 20):
        parts.append(packer.compress(chunk))
    parts.append(packer.compress(bytes(zeros & ((1 << 20) - 1))))
    return b"".join([*parts, packer.flush()])


def _idx_header(shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 0x08, len(shape)]) + np.asarray(shape, dtype=">u4").tobytes()


def _peak_while(fn) -> tuple[int, float, BaseException | None]:
    tracemalloc.start()
    started, error = time.perf_counter(), None
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - returned for the caller to check
        error = exc
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, seconds, error


def test_tracemalloc_sees_numpy_allocations():
    """The memory bounds below are meaningful only if numpy buffers are traced."""
    peak, _, _ = _peak_while(lambda: np.empty(16 << 20, dtype=np.uint8))
    assert peak >= 16 << 20


@pytest.mark.parametrize(("shape", "inflated"), [((16,), 64 << 20), ((1000, 1000), 64 << 20)],
                         ids=["declares-16-B", "declares-1-MB"])
def test_gzip_bomb_stops_at_the_declared_size(tmp_path, shape, inflated):
    """A small gzip IDX whose header declares a small array but whose stream inflates to 64 MiB
    fails fast, having inflated no more than the declared size plus one chunk."""
    path = tmp_path / "bomb-idx1-ubyte.gz"
    path.write_bytes(_gzip(_idx_header(shape), inflated))
    declared = int(np.prod(shape))
    assert path.stat().st_size < inflated // 500
    peak, seconds, error = _peak_while(lambda: read_idx(path))
    assert isinstance(error, IdxFormatError), error
    assert "inflates to more than" in str(error) and str(path) in str(error)
    assert seconds < 2.0
    assert peak < declared + (4 << 20), f"peak {peak} bytes while reading"
    print(f"\n{path.stat().st_size}-byte gzip inflating to {inflated} bytes, header declares "
          f"{declared}: refused in {seconds * 1000:.0f} ms, peak traced memory {peak} bytes")


def test_gzip_header_declaring_more_than_the_stream_can_hold(tmp_path):
    path = tmp_path / "liar.gz"
    path.write_bytes(_gzip(_idx_header((100_000, 100_000)), 1000))  # declares 10 GB
    peak, seconds, error = _peak_while(lambda: read_idx(path))
    assert isinstance(error, IdxFormatError) and "can hold" in str(error), error
    assert peak < 1 << 20 and seconds < 1.0


def test_raw_header_declaring_more_than_the_file_holds(tmp_path):
    path = tmp_path / "liar-idx3-ubyte"
    path.write_bytes(_idx_header((60_000, 28, 28 * 1000)) + bytes(100))  # declares 47 GB
    peak, seconds, error = _peak_while(lambda: read_idx(path))
    assert isinstance(error, IdxFormatError), error
    assert "truncated IDX data" in str(error) and "file has 116" in str(error)
    assert peak < 1 << 20 and seconds < 1.0


def test_valid_gzip_idx_reads_with_bounded_memory(tmp_path):
    from spikebridge.data import write_idx

    array = np.random.default_rng(0).integers(0, 256, (2000, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "ok.gz", array, compress=True)
    result = {}
    peak, _, error = _peak_while(lambda: result.setdefault("a", read_idx(tmp_path / "ok.gz")))
    assert error is None and np.array_equal(result["a"], array)
    assert peak < array.nbytes + (4 << 20)  # the array plus a chunk, not a second copy
