"""Should spikebridge depend on tonic for its event readers? The numbers that decide it.

Measures, for a throw-away virtual environment that holds tonic (``--tonic-venv DIR``, made
outside the repository, e.g.::

    python3 -m venv /tmp/tonicenv
    /tmp/tonicenv/bin/pip install /path/to/torch-2.13.0+cpu-...whl numpy==2.4.6   # our pins
    /tmp/tonicenv/bin/pip install tonic==1.7.0

never an unpinned torch, which pulls the CUDA wheels):

1. install size: every distribution in tonic's dependency closure (``Requires-Dist`` without
   extras, followed recursively) with its size on disk (the files its ``RECORD`` lists); what
   tonic adds beside torch (closure minus torch's), and what it would add to *this* environment
   (closure minus what is installed here);
2. import time: ``import tonic`` in that environment vs ``import spikebridge.events`` here, each
   beside ``import torch`` alone (both import torch), best of ``--imports`` fresh interpreters;
3. read throughput (events/s) of tonic's readers vs ours on the same generated files — an
   emulated N-MNIST tree (``.bin``) and a DVS128-Gesture-like AEDAT 3.1 recording, written by
   ``bench/events_readers.py``'s writers — and a field-by-field cross-check that both read the
   same events.

Without ``--tonic-venv`` tonic must be importable here; if it is not, the script says so and
exits 0 (nothing to compare). Results: ``--json FILE`` (bench/results/events_vs_tonic.json)::

    python bench/events_vs_tonic.py --tonic-venv /tmp/tonicenv [--samples 300] [--repeats 5]
        [--json bench/results/events_vs_tonic.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from events_readers import (  # bench/ is on sys.path when a bench script runs
    fashion_images,
    fmt,
    run_pair,
    stats,
    tonic_aedat,
    write_gesture,
)

from spikebridge.events import (
    NMNIST,
    EmulatorConfig,
    read_aedat31,
    read_nmnist_file,
    write_nmnist_dataset,
)

# prints, for every distribution of the interpreter it runs in: name, version, bytes, requires
_LIST_DISTRIBUTIONS = r"""
import json, os, importlib.metadata as md
out = {}
for d in md.distributions():
    size = 0
    for f in d.files or []:
        try:
            size += os.path.getsize(d.locate_file(f))
        except OSError:
            pass
    out[d.metadata["Name"]] = {"version": d.version, "bytes": size,
                               "requires": d.requires or []}
print(json.dumps(out))
"""


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions(python: str) -> dict[str, dict]:
    """Every distribution installed for ``python``, by normalised name."""
    raw = json.loads(subprocess.run([python, "-c", _LIST_DISTRIBUTIONS], check=True,
                                    capture_output=True, text=True).stdout)
    return {_key(name): {"name": name, **info} for name, info in raw.items()}


def closure(root: str, dists: dict[str, dict]) -> set[str]:
    """``root`` and everything it requires, recursively (requirements behind an extra are not
    installed by a plain ``pip install root``, so they are skipped; other markers are kept)."""
    seen, todo = set(), [_key(root)]
    while todo:
        name = todo.pop()
        if name in seen or name not in dists:
            continue
        seen.add(name)
        for requirement in dists[name]["requires"]:
            if "extra ==" in requirement.replace("extra==", "extra =="):
                continue
            todo.append(_key(re.split(r"[\s;<>=!~\[(]", requirement.strip(), maxsplit=1)[0]))
    return seen


def install_size(python: str) -> dict:
    dists = distributions(python)
    tonic, torch_deps = closure("tonic", dists), closure("torch", dists)
    here = set(distributions(sys.executable))  # a fresh interpreter: not tonic's sys.path

    def total(names):
        return sum(dists[n]["bytes"] for n in names)

    added = sorted(tonic - torch_deps, key=lambda n: -dists[n]["bytes"])
    new_here = sorted((tonic - torch_deps) - here, key=lambda n: -dists[n]["bytes"])
    return {
        "tonic": dists["tonic"]["version"],
        "torch_in_that_env": dists["torch"]["version"] if "torch" in dists else None,
        "closure_bytes": total(tonic),
        "beside_torch": {"count": len(added), "bytes": total(added),
                         "packages": {dists[n]["name"]: [dists[n]["version"], dists[n]["bytes"]]
                                      for n in added}},
        "new_to_this_env": {"count": len(new_here), "bytes": total(new_here),
                            "packages": [dists[n]["name"] for n in new_here]},
    }


def import_seconds(python: str, statement: str, runs: int) -> dict:
    """Wall and CPU (user + system) seconds of ``python -c statement`` in fresh interpreters,
    min and median of ``runs``. CPU time is what to compare on a shared machine: waiting for a
    core inflates the wall time, not the CPU time."""
    wall, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([python, "-c", statement], check=True, capture_output=True)
        wall.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {"wall_min": min(wall), "wall_median": statistics.median(wall),
            "cpu_min": min(cpu), "cpu_median": statistics.median(cpu)}


def _site_packages(python: str) -> str:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return subprocess.run([python, "-c", code], check=True, capture_output=True,
                          text=True).stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tonic-venv", type=Path, default=None,
                    help="virtual environment holding tonic (default: tonic importable here)")
    ap.add_argument("--samples", type=int, default=300, help="emulated N-MNIST samples")
    ap.add_argument("--gesture-events", type=int, default=2_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--imports", type=int, default=5, help="fresh interpreters per import time")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    python = sys.executable
    if args.tonic_venv is not None:
        python = str(args.tonic_venv / "bin" / "python")
        if not os.access(python, os.X_OK):
            print(f"no interpreter at {python}; skipping (nothing to compare)")
            return 0
        sys.path.append(_site_packages(python))  # after ours: our numpy and torch stay first
    try:
        import tonic.io as tio
    except ImportError as exc:
        print(f"tonic is not importable ({exc}); skipping: pass --tonic-venv DIR of a venv "
              "with tonic==1.7.0 (see this script's docstring)")
        return 0
    results: dict = {
        "command": "python bench/events_vs_tonic.py " + " ".join(sys.argv[1:]),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0],
        "python": platform.python_version(), "numpy": np.__version__,
        "torch": torch.__version__, "repeats": args.repeats,
    }
    results["install"] = install_size(python)
    results["import_seconds"] = {
        "tonic: import torch": import_seconds(python, "import torch", args.imports),
        "tonic: import tonic": import_seconds(python, "import tonic", args.imports),
        "ours: import torch": import_seconds(sys.executable, "import torch", args.imports),
        "ours: import spikebridge.events": import_seconds(
            sys.executable, "import spikebridge.events", args.imports),
    }
    reads = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = fashion_images(args.samples)
        write_nmnist_dataset(tmp / "nmnist", (images, np.arange(len(images)) % 10),
                             config=EmulatorConfig())
        dataset = NMNIST(tmp / "nmnist")
        files = [dataset.source(i) for i in range(len(dataset))]
        dt = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
        n_events = 0
        for f in files:
            ours, theirs = read_nmnist_file(f), tio.read_mnist_file(str(f), dtype=dt)
            assert len(ours) == len(theirs) and all(
                np.array_equal(ours[k], theirs[k]) for k in "xytp"), f
            n_events += len(ours)
        results["crosscheck_nmnist"] = (f"{len(files)} files, {n_events} events: identical x, "
                                        "y, t, p")
        a, b = run_pair(args.repeats, lambda: [read_nmnist_file(f) for f in files],
                        lambda: [tio.read_mnist_file(str(f), dtype=dt) for f in files])
        reads["N-MNIST .bin"] = {"ours": stats(a, n_events, len(files)),
                                 "tonic": stats(b, n_events, len(files))}
        gesture = tmp / "gesture"
        gesture.mkdir()
        path = write_gesture(gesture, args.gesture_events)
        ours = read_aedat31(path)
        theirs, how = tonic_aedat(tio, path, "ibm")
        assert len(ours) == len(theirs) and all(
            np.array_equal(ours[k], theirs[k]) for k in "xytp")
        results["crosscheck_aedat31"] = (f"{len(ours)} events: identical x, y, t, p (tonic: "
                                         f"{how})")
        a, b = run_pair(args.repeats, lambda: read_aedat31(path),
                        lambda: tonic_aedat(tio, path, "ibm"))
        reads["AEDAT 3.1"] = {"ours": stats(a, len(ours), 1), "tonic": stats(b, len(ours), 1)}
    results["reads"] = reads

    inst = results["install"]
    print(f"tonic {inst['tonic']} beside torch {inst['torch_in_that_env']}: "
          f"{inst['beside_torch']['count']} distributions, "
          f"{inst['beside_torch']['bytes'] / 2**20:.0f} MiB on disk; new to this environment: "
          f"{inst['new_to_this_env']['count']} ({inst['new_to_this_env']['bytes'] / 2**20:.0f} "
          "MiB)")
    for name, (version, size) in list(inst["beside_torch"]["packages"].items())[:8]:
        print(f"  {name} {version}: {size / 2**20:.1f} MiB")
    for name, t in results["import_seconds"].items():
        print(f"{name}: CPU {t['cpu_min']:.2f} s (median {t['cpu_median']:.2f}), wall "
              f"{t['wall_min']:.2f} s (median {t['wall_median']:.2f})")
    print("| file | ours events/s | tonic events/s | ours / tonic |")
    print("|---|---:|---:|---:|")
    for name, r in reads.items():
        o, t = r["ours"]["events_per_s"]["median"], r["tonic"]["events_per_s"]["median"]
        print(f"| {name} | {fmt(o)} | {fmt(t)} | {o / t:.2f}× |")
    print(results["crosscheck_nmnist"])
    print(results["crosscheck_aedat31"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
