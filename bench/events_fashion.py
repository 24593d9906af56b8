"""Event-camera data end to end: Fashion-MNIST through the emulator, a CNN on the counts, its SNN
on the event frames — beside the same CNN on the images (issue #20).

1. A fixed random subset of Fashion-MNIST (``--train`` / ``--test`` images, seed 0: exactly the
   images ``spikebridge train --train-subset N`` and ``spikebridge compare --limit M`` pick) is
   moved along N-MNIST's three saccades by the emulator (:mod:`spikebridge.events.emulator`,
   default parameters) and written as an N-MNIST tree ``Train/<label>/*.bin``,
   ``Test/<label>/*.bin`` under ``--work`` (ignored by git; never into the repository).
2. ``spikebridge train --dataset nmnist --data-dir WORK/events`` trains ``--model`` on the count
   images, once with ReLU (for ECC, which converts ReLU networks) and once with QCFS (for
   QCFS / COS); ``spikebridge train --dataset fashion-mnist --train-subset N`` trains the same
   architecture on the same images, for the image pipeline.
3. ``spikebridge compare --input events --T F`` converts and runs the SNNs on the test
   recordings cut into ``F`` frames, once per frame count (each its own framing of the same
   recordings); ``spikebridge compare --T 8,...,48 --limit M`` runs the image SNNs (the image
   at every step). Diagnostic (``--no-diagnose`` skips it): the event CNNs' SNNs on the count
   images held constant at every step (``spikebridge compare`` on the events checkpoints with
   the default image input), which separates what the frames' variation over time costs from
   what conversion costs at the same number of steps; and the same recordings at the largest
   frame count with each recording's frames put in a random order (seeded; the same frames,
   the same count image, the same events: only their order changes), run through the Python
   API (``experiments.convert_model`` / ``spikebridge.evaluate``).
4. Prints the tables and writes ``--json`` with every command, its wall time and the records.

    python bench/events_fashion.py --train 6000 --test 1000 --epochs 4 \\
        --json bench/results/events_fashion.json

``--reuse`` keeps an emulated tree, checkpoints and compare results already in ``--work``
(same sizes), e.g. to re-print the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spikebridge.data import load_dataset
from spikebridge.events import EmulatorConfig, write_nmnist_dataset

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "results" / "models" / "events_fashion"  # ignored by git
METHODS = "ecc,qcfs,cos"
MEMORY_METHODS = "ecc,qcfs"  # COS calibrates unsigned neurons: no memory variant (§2.7)


def _say(message: str) -> None:
    print(message, flush=True)


class Runner:
    """Runs ``spikebridge`` commands, recording each (as typed) with its wall time in
    ``work/steps.json``, so that a ``--reuse`` run still reports the stages it skipped."""

    def __init__(self, work: Path) -> None:
        self.path = work / "steps.json"
        self.recorded: dict[str, dict[str, Any]] = (
            json.loads(self.path.read_text()) if self.path.exists() else {})
        self.used: list[str] = []

    def __call__(self, stage: str, args: list[str]) -> float:
        shown = "spikebridge " + " ".join(shlex.quote(_relative(a)) for a in args)
        _say(f"[{stage}] {shown}")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "spikebridge", *args], check=True, cwd=ROOT)
        seconds = time.perf_counter() - start
        self.record(stage, {"command": shown, "seconds": round(seconds, 1)})
        _say(f"[{stage}] {seconds:.0f} s")
        return seconds

    def record(self, stage: str, entry: dict[str, Any]) -> None:
        self.recorded[stage] = {"stage": stage, **entry}
        self.path.write_text(json.dumps(self.recorded, indent=1))
        self.used.append(stage)

    def reused(self, stage: str) -> None:
        _say(f"[{stage}] reusing the earlier result")
        self.used.append(stage)

    @property
    def log(self) -> list[dict[str, Any]]:
        return [self.recorded.get(stage, {"stage": stage, "seconds": None})
                for stage in self.used]


def _relative(arg: str) -> str:
    """``arg`` with this checkout's root left out of every path in it (``relu=DIR,qcfs=DIR``)."""
    return arg.replace(str(ROOT) + os.sep, "")


def emulate(work: Path, n_train: int, n_test: int, reuse: bool) -> dict[str, Any]:
    """The emulated N-MNIST tree of the Fashion-MNIST subsets at ``work/events/nmnist``."""
    root = work / "events" / "nmnist"
    meta_path = work / "events" / "subset.json"
    meta = {"train": n_train, "test": n_test, "seed": 0, "source": "fashion-mnist",
            "emulator": EmulatorConfig().__dict__ | {"canvas": list(EmulatorConfig().canvas)}}
    if reuse and root.exists() and meta_path.exists():
        old = json.loads(meta_path.read_text())
        if {k: old.get(k) for k in meta} == meta:
            _say(f"[emulate] reusing {_relative(str(root))}")
            return old
    if root.exists():
        shutil.rmtree(root)
    train = load_dataset("fashion-mnist", "train").subset(n_train, seed=0)
    test = load_dataset("fashion-mnist", "test").subset(n_test, seed=0)
    _say(f"[emulate] {n_train} + {n_test} Fashion-MNIST images -> {_relative(str(root))}")
    start = time.perf_counter()
    write_nmnist_dataset(root, (train.images[:, 0].numpy(), train.labels.numpy()),
                         (test.images[:, 0].numpy(), test.labels.numpy()), batch_size=128)
    seconds = time.perf_counter() - start
    sizes = [p.stat().st_size // 5 for p in root.glob("*/*/*.bin")]  # 5 bytes an event
    meta |= {"seconds": round(seconds, 1), "images_per_s": round((n_train + n_test) / seconds, 1),
             "events_per_recording": {"mean": float(np.mean(sizes)),
                                      "min": int(np.min(sizes)), "max": int(np.max(sizes))}}
    meta_path.write_text(json.dumps(meta, indent=1))
    _say(f"[emulate] {seconds:.0f} s, {meta['events_per_recording']['mean']:.0f} events a "
         "recording")
    return meta


def train_models(run: Runner, work: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Four checkpoints: {events, images} × {relu, qcfs}, the same architecture and budget."""
    out = {}
    common = ["--model", args.model, "--epochs", str(args.epochs), "--batch-size",
              str(args.batch_size), "--seed", "0", "--quiet"]
    for data in ("events", "images"):
        source = (["--dataset", "nmnist", "--data-dir", str(work / "events")] if data == "events"
                  else ["--dataset", "fashion-mnist", "--train-subset", str(args.train)])
        for kind, activation in (("relu", "relu"), ("qcfs", args.qcfs)):
            directory = work / f"cnn_{data}_{kind}"
            out[f"{data}_{kind}"] = directory
            if args.reuse and (directory / "config.json").exists():
                run.reused(f"train {data} {kind}")
                continue
            run(f"train {data} {kind}", ["train", *source, "--activation", activation, *common,
                                         "--out", str(directory), "--overwrite"])
    return out


def compare(run: Runner, work: Path, name: str, args: list[str], reuse: bool,
            methods: str = METHODS) -> list[dict]:
    out = work / name
    if reuse and (out / "results.json").exists():
        run.reused(name)
    else:
        run(name, ["compare", *args, "--methods", methods, "--out", str(out), "--quiet"])
    return json.loads((out / "results.json").read_text())["results"]


def _cached_stage(path: Path, reuse: bool, stage: str, what: str,
                  compute: Any) -> dict[str, Any]:
    """A diagnostic stage's record: read from ``path`` with ``reuse``, else ``compute()``d,
    timed (``seconds``) and written there, announced as ``[stage] what``."""
    if reuse and path.exists():
        return json.loads(path.read_text())
    _say(f"[{stage}] {what}")
    start = time.perf_counter()
    out = compute()
    out["seconds"] = round(time.perf_counter() - start, 1)
    path.write_text(json.dumps(out, indent=1))
    _say(f"[{stage}] {out['seconds']:.0f} s")
    return out


def _event_snns(models: dict[str, Path], options: Any):
    """``(method, snn, test frame loader)`` for ECC (the ReLU CNN on counts) and QCFS (the QCFS
    CNN), converted as ``spikebridge compare --input events`` would with ``options``."""
    from spikebridge.checkpoint import load_checkpoint
    from spikebridge.experiments import convert_model, frame_loader
    from spikebridge.methods import get_method

    for method, kind in (("ecc", "relu"), ("qcfs", "qcfs")):
        ann, config = load_checkpoint(models[f"events_{kind}"])
        snn, _ = convert_model(ann, config, get_method(method), options)
        yield method, snn, frame_loader(config, "test", options)


def shuffled_frames(work: Path, models: dict[str, Path], frames: int, calibration: int,
                    reuse: bool) -> dict[str, Any]:
    """Accuracy at ``frames`` of ECC and QCFS on the test recordings' frames in their order and
    with every recording's frames permuted at random (seed 0): what the order of the events in
    time costs, the frames' content and their mean (the count image) being the same."""
    from spikebridge.evaluation import evaluate
    from spikebridge.experiments import RunOptions, event_value

    def compute() -> dict[str, Any]:
        options = RunOptions(data_dir=work / "events", input="sequence", frames=frames,
                             calibration_samples=calibration)
        out: dict[str, Any] = {}
        for method, snn, loader in _event_snns(models, options):
            batches = [(x, y) for x, y in loader]
            g = torch.Generator().manual_seed(0)
            shuffled = []
            for x, y in batches:  # one permutation of the T frames per recording
                order = torch.rand(x.shape[:2], generator=g).argsort(dim=0)
                shuffled.append((x.gather(0, order[..., None, None, None].expand_as(x)), y))
            out[method] = {}
            for name, data in (("in_order", batches), ("shuffled", shuffled)):
                result = evaluate(snn, data, [frames], input="sequence",
                                  event_value=event_value(loader))
                out[method][name] = {"accuracy": result.snn_accuracy[frames],
                                     "sops": result.operations.per_T[frames]["snn_sops"]}
        return out

    return _cached_stage(work / f"shuffled_F{frames}.json", reuse, f"shuffled F{frames}",
                         "ecc, qcfs on frames in order and shuffled in time", compute)


def current_bound(work: Path, models: dict[str, Path], frames: int, calibration: int,
                  reuse: bool, recordings: int = 200) -> dict[str, Any]:
    """Per layer, the fraction of per-step input currents with ``|c(t)| > θ`` of ECC's and
    QCFS's memory-neuron SNNs on the first ``recordings`` test recordings at ``frames``: where
    the memory neuron's count equation (docs/methods.md §2.7) does not hold, one spike per step
    lags behind it."""
    from spikebridge.experiments import RunOptions
    from spikebridge.simulate import simulate

    def compute() -> dict[str, Any]:
        options = RunOptions(data_dir=work / "events", input="sequence", frames=frames,
                             calibration_samples=calibration, neuron="memory",
                             batch_size=recordings)
        out: dict[str, Any] = {"recordings": recordings}
        for method, snn, loader in _event_snns(models, options):
            x, _ = next(iter(loader))
            beyond: dict[str, list[float]] = {name: [0.0, 0.0] for name in snn.neurons()}
            hooks = [n.register_forward_pre_hook(
                lambda m, i, tally=beyond[name]: _tally_beyond(m, i, tally))
                for name, n in snn.neurons().items()]
            try:
                simulate(snn, x[:, :recordings], frames, input="sequence", mode="step")
            finally:
                for h in hooks:
                    h.remove()
            out[method] = {name: b / n for name, (b, n) in beyond.items()}
        return out

    return _cached_stage(work / f"current_bound_F{frames}.json", reuse,
                         f"current bound F{frames}",
                         "per-step currents beyond ±θ, ecc and qcfs, memory neurons", compute)


def _tally_beyond(neuron: Any, inputs: tuple, tally: list[float]) -> None:
    """Add a step's currents beyond ±θ, and all of them, to ``tally`` (a pre-hook's body)."""
    from spikebridge.neurons import input_current

    current = input_current(inputs).abs()
    tally[0] += float((current > neuron.threshold).sum())
    tally[1] += current.numel()


def readers() -> dict[str, Any] | None:
    """The N-MNIST reader / framing throughput of ``bench/events_readers.py`` (its result file,
    if there; not re-measured here): median events/s and samples/s of each stage."""
    path = ROOT / "bench" / "results" / "events_readers.json"
    if not path.exists():
        return None
    found = json.loads(path.read_text())
    rows = {name: {"events_per_s": v["ours"]["events_per_s"]["median"],
                   "samples_per_s": v["ours"]["samples_per_s"]["median"]}
            for name, v in found.items() if isinstance(v, dict) and "ours" in v}
    return {"source": "bench/results/events_readers.json", "threads": found.get("threads"),
            "emulator": found.get("emulator"), "rows": rows}


def _row(record: dict, t: int) -> dict[str, Any]:
    ops = record["ops"][str(t)]
    negative = sum(layer.get(str(t), {}).get("negative_spikes", 0.0)
                   for layer in record.get("operations", {}).get("layers", {}).values())
    return {"accuracy": record["snn_accuracy"][str(t)], "sops": ops["snn_sops"],
            "negative_spikes": negative,
            "sops_per_mac": ops["sops_per_mac"], "input_events": ops.get("input_events"),
            "sops_input": ops.get("snn_sops_input"),
            "presimulation": record["latency"][str(t)]["presimulation"],
            "seconds": record["seconds"]["snn"]}


def _by_method(records: list[dict]) -> dict[str, dict]:
    """Records by method, ``ecc+memory`` for a run with signed neurons with memory."""
    return {rec["method"] + ("+memory" if rec.get("neuron") == "memory" else ""): rec
            for rec in records}


def _checkpoint_accuracy(directory: Path) -> float:
    return json.loads((directory / "config.json").read_text())["test_accuracy"]


def tables(result: dict[str, Any]) -> str:
    frames, methods = result["frames"], [m for m in result["events"] if "+" not in m]
    ev, im = result["events"], result["images"]
    lines = ["Events (SNN on F frames of each test recording; SOPs and input events per sample):",
             "", "| frames F | input events | " + " | ".join(
                 f"{m} % | {m} SOPs" for m in methods) + " |",
             "|---|---|" + "---|---|" * len(methods)]
    for f in frames:
        cells = [f"{ev[m][str(f)]['accuracy'] * 100:.2f} | {ev[m][str(f)]['sops'] / 1e6:.2f} M"
                 for m in methods]
        events = ev[methods[0]][str(f)]["input_events"]
        lines.append(f"| {f} | {events:.0f} | " + " | ".join(cells) + " |")
    memory = [m for m in ev if m.endswith("+memory")]
    if memory:
        lines += ["", "Events, signed neurons with memory (--neuron memory, docs/methods.md "
                  "§2.7):", "", "| frames F | " + " | ".join(
                      f"{m} % | {m} SOPs | negative spikes" for m in memory) + " |",
                  "|---|" + "---|---|---|" * len(memory)]
        for f in frames:
            cells = [f"{ev[m][str(f)]['accuracy'] * 100:.2f} | "
                     f"{ev[m][str(f)]['sops'] / 1e6:.2f} M | "
                     f"{ev[m][str(f)]['negative_spikes']:.0f}" for m in memory]
            lines.append(f"| {f} | " + " | ".join(cells) + " |")
    cnn = result["cnn"]
    lines += ["", f"CNN on counts (test recordings): ReLU {cnn['events_relu'] * 100:.2f} %, "
              f"QCFS {cnn['events_qcfs'] * 100:.2f} %; on images (the same "
              f"{result['sizes']['test']} test images): ReLU {cnn['images_relu'] * 100:.2f} %, "
              f"QCFS {cnn['images_qcfs'] * 100:.2f} %", "",
              "Images (the image at every step, T = F steps):", "",
              "| T | " + " | ".join(f"{m} % | {m} SOPs" for m in methods) + " |",
              "|---|" + "---|---|" * len(methods)]
    for f in frames:
        cells = [f"{im[m][str(f)]['accuracy'] * 100:.2f} | {im[m][str(f)]['sops'] / 1e6:.2f} M"
                 for m in methods]
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    if result.get("counts_constant"):
        cc = result["counts_constant"]
        lines += ["", "Diagnostic: event CNNs' SNNs on the count image at every step:", "",
                  "| T | " + " | ".join(f"{m} %" for m in methods) + " |",
                  "|---|" + "---|" * len(methods)]
        for f in frames:
            lines.append(f"| {f} | " + " | ".join(
                f"{cc[m][str(f)]['accuracy'] * 100:.2f}" for m in methods) + " |")
    if result.get("shuffled"):
        sh, f = result["shuffled"], max(frames)
        lines += ["", f"Diagnostic: {f} frames in order vs shuffled in time (same frames):"]
        for m in ("ecc", "qcfs"):
            lines.append(f"- {m}: in order {sh[m]['in_order']['accuracy'] * 100:.2f} %, "
                         f"shuffled {sh[m]['shuffled']['accuracy'] * 100:.2f} %")
    if result.get("current_bound"):
        cb = result["current_bound"]
        lines += ["", f"Diagnostic: per-step currents beyond ±θ, memory neurons, {max(frames)} "
                  f"frames, {cb['recordings']} test recordings (per layer):"]
        for m in ("ecc", "qcfs"):
            lines.append(f"- {m}: " + ", ".join(f"{name} {share * 100:.1f} %"
                                                 for name, share in cb[m].items()))
    lines += ["", "Target: SNN on events within 2 pt of its CNN on counts at "
              f"{max(frames)} frames:"]
    for m, verdict in result["target"].items():
        lines.append(f"- {m}: {verdict['snn'] * 100:.2f} % vs CNN {verdict['cnn'] * 100:.2f} % "
                     f"(gap {verdict['gap_pt']:+.2f} pt): {'met' if verdict['met'] else 'NOT met'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=6000, help="training images (default 6000)")
    parser.add_argument("--test", type=int, default=1000, help="test images (default 1000)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--model", default="fashion_cnn")
    parser.add_argument("--qcfs", default="qcfs:L=4", help="the QCFS activation (default L = 4)")
    parser.add_argument("--frames", default="8,16,32,48")
    parser.add_argument("--calibration-samples", type=int, default=1000)
    parser.add_argument("--no-diagnose", action="store_true",
                        help="skip the constant-count-image diagnostic run")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the runs with signed neurons with memory (--neuron memory)")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    frames = sorted({int(f) for f in args.frames.split(",")})
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started, load_start = time.perf_counter(), round(os.getloadavg()[0], 2)
    run = Runner(work)

    data = emulate(work, args.train, args.test, args.reuse)
    models = train_models(run, work, args)
    pair = {d: f"relu={models[d + '_relu']},qcfs={models[d + '_qcfs']}"
            for d in ("events", "images")}
    calib = ["--calibration-samples", str(args.calibration_samples)]
    events: dict[str, dict[str, Any]] = {}
    ann_on_frames: dict[str, float] = {}
    for f in frames:
        records = compare(run, work, f"compare_events_F{f}",
                          ["--model", pair["events"], "--input", "events", "--T", str(f),
                           "--data-dir", str(work / "events"), *calib], args.reuse)
        if not args.no_memory:
            records = records + compare(
                run, work, f"compare_events_memory_F{f}",
                ["--model", pair["events"], "--input", "events", "--T", str(f), "--neuron",
                 "memory", "--data-dir", str(work / "events"), *calib], args.reuse,
                MEMORY_METHODS)
        for m, rec in _by_method(records).items():
            events.setdefault(m, {})[str(f)] = _row(rec, f)
            ann_on_frames[f"{m}_F{f}"] = rec["ann_accuracy"]
    steps = ",".join(map(str, frames))
    images = {m: {str(t): _row(rec, t) for t in frames}
              for m, rec in _by_method(compare(
                  run, work, "compare_images",
                  ["--model", pair["images"], "--T", steps, "--limit", str(args.test), *calib],
                  args.reuse)).items()}
    counts_constant = shuffled = bound = None
    if not args.no_diagnose and not args.no_memory:
        bound = current_bound(work, models, max(frames), args.calibration_samples, args.reuse)
    if not args.no_diagnose:
        shuffled = shuffled_frames(work, models, max(frames), args.calibration_samples,
                                   args.reuse)
        counts_constant = {m: {str(t): _row(rec, t) for t in frames}
                           for m, rec in _by_method(compare(
                               run, work, "compare_counts_constant",
                               ["--model", pair["events"], "--T", steps, "--data-dir",
                                str(work / "events"), *calib], args.reuse)).items()}
    cnn = {k: _checkpoint_accuracy(v) for k, v in models.items()}
    # the images' CNN accuracy on the same test subset the image SNNs ran on
    image_records = _by_method(json.loads((work / "compare_images" / "results.json"
                                           ).read_text())["results"])
    cnn["images_relu"] = image_records["ecc"]["ann_accuracy"]
    cnn["images_qcfs"] = image_records["qcfs"]["ann_accuracy"]
    source = {"ecc": "events_relu", "qcfs": "events_qcfs", "cos": "events_qcfs"}
    last = str(max(frames))

    def cnn_of(m: str) -> float:
        return cnn[source[m.split("+")[0]]]

    target = {m: {"snn": events[m][last]["accuracy"], "cnn": cnn_of(m),
                  "gap_pt": (events[m][last]["accuracy"] - cnn_of(m)) * 100,
                  "met": (cnn_of(m) - events[m][last]["accuracy"]) * 100 <= 2.0}
              for m in events}
    # the command that computes everything (a --reuse run re-reads stages it computed)
    command = "python bench/events_fashion.py " + " ".join(
        shlex.quote(_relative(a)) for a in sys.argv[1:] if a != "--reuse")
    result = {
        "command": command, "reused_stages": args.reuse,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "cores": os.cpu_count(),
                    "load_1min_at_start_end": [load_start, round(os.getloadavg()[0], 2)]},
        "sizes": {"train": args.train, "test": args.test, "subset_seed": 0},
        "model": args.model, "epochs": args.epochs, "qcfs_activation": args.qcfs,
        "frames": frames, "methods": METHODS.split(","),
        "memory_methods": [] if args.no_memory else MEMORY_METHODS.split(","), "emulation": data,
        "cnn": cnn, "ann_on_frame_means": ann_on_frames,
        "events": events, "images": images, "counts_constant": counts_constant,
        "shuffled": shuffled, "current_bound": bound, "readers": readers(),
        "target": target, "steps": run.log,
        "seconds_this_invocation": round(time.perf_counter() - started, 1),
    }
    stages = [data.get("seconds"), *(e["seconds"] for e in run.log),
              (shuffled or {}).get("seconds"), (bound or {}).get("seconds")]
    result["seconds_total"] = round(sum(x for x in stages if x is not None), 1)
    _say("\n" + tables(result) + f"\n\nall stages {result['seconds_total']:.0f} s "
         f"(this invocation {result['seconds_this_invocation']:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        _say(f"wrote {_relative(str(args.json))}")


if __name__ == "__main__":
    main()
