"""Our NIR exports run in other executors, per method, on Fashion-MNIST test images
(docs/export.md, "Consumers"):

* **reference** — tests/nir_reference.py, an executor written from NIR's documented semantics
  (initial states from our metadata, and once without them, as a consumer ignoring metadata);
* **Norse 1.1.0** (``pip install --no-deps norse==1.1.0``: its own requirements would replace
  torch) on the consumer profile (``for_consumers``: spike values and pooling factors folded
  into weights, AvgPool2d as SumPool2d), one image at a time (see docs/export.md: NIR's Flatten
  dims exclude the batch, which Norse passes to ``torch.nn.Flatten`` unchanged);
* **snnTorch 1.0.0** (``import_from_nir``) on the same profile.

For each: accuracy at T = 1, 4, 16, the share of images whose prediction equals ours, and the
total spikes per IF layer relative to ours. A consumer that cannot import or run a graph is
listed with its error.

    python bench/nir_consumers.py --limit 500 --relu-model bench/results/models/relu_2ep \\
        --out bench/results/nir_consumers.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import spikebridge as sb
from spikebridge.calibration import CalibrationData
from spikebridge.checkpoint import load_checkpoint
from spikebridge.data import BatchLoader, load_dataset
from spikebridge.nir_export import NirExportError, export_nir, for_consumers
from spikebridge.shipped import SHIPPED_MODEL_DIR

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from nir_reference import NirExecutor  # noqa: E402

STEPS = (1, 4, 16)


def _our_run(snn, x, steps):
    counts: dict[str, float] = {}
    hooks = [n.register_forward_hook(lambda m, i, o, k=k: counts.__setitem__(
        k, counts.get(k, 0.0) + float((o != 0).sum()))) for k, n in snn.neurons().items()]
    try:
        out = sb.simulate(snn, x, steps, mode="step")
    finally:
        for h in hooks:
            h.remove()
    return out, list(counts.values())


def _reference_run(graph, x, steps, initial_states=True):
    executor = NirExecutor(graph, initial_states=initial_states)
    counts: dict[str, float] = {}
    original = executor._node

    def node(n, name, i, xx, path):
        out = original(n, name, i, xx, path)
        if not path and name in graph.nodes and type(n).__name__ in ("IF", "NIRGraph"):
            counts[name] = counts.get(name, 0.0) + float((out != 0).sum())
        return out

    executor._node = node
    return executor.run(x, steps), list(counts.values())


def _norse_run(graph, x, steps):
    import norse.torch as norse

    net = norse.from_nir(graph)
    counts: dict[str, float] = {}
    neurons = [(name, m) for name, m in net.named_modules() if type(m).__name__ == "IAFCell"]
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: counts.__setitem__(
        k, counts.get(k, 0.0) + float(o[0].sum()))) for k, m in neurons]
    outputs = []
    try:
        for image in x:  # one at a time: NIR's Flatten dims exclude the batch
            state, per_step = None, []
            for _ in range(steps):
                out, state = net(image, state)
                per_step.append(out)
            outputs.append(torch.stack(per_step))
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(outputs, dim=1), list(counts.values())


def _snntorch_run(graph, x, steps):
    from snntorch.import_nir import import_from_nir

    net = import_from_nir(graph)
    state, outputs = None, []
    for _ in range(steps):
        out, state = net(x, state)
        outputs.append(out)
    return torch.stack(outputs), []


def _compare(ours, spikes, theirs, their_spikes, labels):
    row = {}
    for t in STEPS:
        a = ours[:t].sum(0).argmax(-1)
        b = theirs[:t].sum(0).argmax(-1)
        row[f"T={t}"] = {"ours": float((a == labels).float().mean()),
                         "theirs": float((b == labels).float().mean()),
                         "same_prediction": float((a == b).float().mean())}
    if their_spikes and len(their_spikes) == len(spikes):
        row["spikes_relative"] = [round(b / a, 6) if a else None
                                  for a, b in zip(spikes, their_spikes, strict=True)]
    row["bit_identical"] = bool(torch.equal(ours, theirs))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--relu-model", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("bench/results/nir_consumers.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    results: dict[str, dict] = {}
    runs = [("qcfs", SHIPPED_MODEL_DIR)] + [(m, args.relu_model) for m in (
        "threshold-balancing", "maxnorm", "robustnorm", "rmp", "opi")]
    steps = max(STEPS)
    for method, model_dir in runs:
        ann, config = load_checkpoint(model_dir)
        test = load_dataset(config["dataset"], "test").subset(args.limit, seed=0)
        x, labels = next(iter(BatchLoader(test, args.limit)))
        data = None
        if method != "qcfs":
            train = load_dataset(config["dataset"], "train").subset(1000, seed=0)
            data = CalibrationData(BatchLoader(train, 250), 1000)
        snn = sb.convert(ann, method, calibration_data=data)
        ours, spikes = _our_run(snn, x, steps)
        graph = export_nir(snn)
        entry: dict[str, object] = {"reset": next(iter(snn.neurons().values())).reset}
        out, counts = _reference_run(graph, x, steps)
        entry["reference"] = _compare(ours, spikes, out, counts, labels)
        out, counts = _reference_run(graph, x, steps, initial_states=False)
        entry["reference, initial states ignored"] = _compare(ours, spikes, out, counts, labels)
        try:
            profile = for_consumers(graph)
        except NirExportError as exc:
            entry["consumer profile"] = f"not built: {exc}"
            profile = None
        for name, run in (("norse 1.1.0", _norse_run), ("snntorch 1.0.0", _snntorch_run)):
            if profile is None:
                continue
            try:
                out, counts = run(profile, x, steps)
                entry[name] = _compare(ours, spikes, out, counts, labels)
            except Exception as exc:  # a consumer's failure is a result
                entry[name] = f"fails: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        results[method] = entry
        print(method, json.dumps(entry)[:600])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"images": args.limit, "steps": list(STEPS),
                                    "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
