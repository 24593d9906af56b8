"""Time to the first simulated batch: a saved SNN (``load_snn``) versus converting from the ANN
checkpoint (``load_checkpoint`` + ``convert``, with the calibration pass a data-based method
needs). Interleaved in one process, ``--rounds`` rounds, min / median / max (docs/benchmarks.md,
"Saved SNNs: time to the first batch").

    python bench/snn_start.py --rounds 5 --out bench/results/snn_start.json

Both paths end with one simulated batch of 250 test images at T = 4, so the figure is what a
user waits before results start to arrive. The data-based method (robustnorm, 1000 calibration
images, the CLI's default) runs on the shipped architecture with ReLU activations: its cost does
not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import spikebridge as sb
from spikebridge.activations import ActivationSpec
from spikebridge.calibration import CalibrationData
from spikebridge.checkpoint import load_checkpoint, save_checkpoint
from spikebridge.data import BatchLoader, load_dataset
from spikebridge.models import create_model
from spikebridge.shipped import SHIPPED_MODEL_DIR
from spikebridge.snn_artefact import load_snn, save_snn

STEPS, BATCH, CALIBRATION = 4, 250, 1000


def _relu_checkpoint(directory: Path, config: dict) -> Path:
    torch.manual_seed(0)
    relu = ActivationSpec.parse("relu")
    model = create_model("fashion_cnn", 10, 1, activation=relu, input_size=(28, 28))
    save_checkpoint(directory, model, {**config, "activation": relu.to_dict(),
                                       "epochs_completed": 1}, {"epoch": 1})
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/snn_start.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    test = load_dataset("fashion-mnist", "test").subset(BATCH, seed=0)
    x = next(iter(BatchLoader(test, BATCH)))[0]
    train = load_dataset("fashion-mnist", "train").subset(CALIBRATION, seed=0)
    work = Path(tempfile.mkdtemp(prefix="snn-start-"))
    _, shipped_config = load_checkpoint(SHIPPED_MODEL_DIR)
    sources = {"cos": SHIPPED_MODEL_DIR, "robustnorm": _relu_checkpoint(work / "relu",
                                                                       shipped_config)}
    saved = {}
    for method, source in sources.items():
        ann, config = load_checkpoint(source)
        data = CalibrationData(BatchLoader(train, BATCH), CALIBRATION) if method != "cos" else None
        saved[method] = save_snn(sb.convert(ann, method, calibration_data=data), work / method,
                                 ann_config=config, source=source)

    def from_ann(method: str) -> None:
        ann, _ = load_checkpoint(sources[method])
        data = CalibrationData(BatchLoader(train, BATCH), CALIBRATION) if method != "cos" else None
        sb.simulate(sb.convert(ann, method, calibration_data=data), x, STEPS)

    def from_saved(method: str) -> None:
        sb.simulate(load_snn(saved[method]), x, STEPS)

    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for method in sources:
            for kind, fn in (("from ANN", from_ann), ("saved SNN", from_saved)):
                start = time.perf_counter()
                fn(method)
                times.setdefault(f"{method} {kind}", []).append(time.perf_counter() - start)
    result = {key: {"min": min(v), "median": statistics.median(v), "max": max(v)}
              for key, v in times.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rounds": args.rounds, "steps": STEPS, "batch": BATCH,
                                    "calibration_images": CALIBRATION, "seconds": result},
                                   indent=2) + "\n")
    for key, v in result.items():
        print(f"{key:<24} min {v['min']:.3f} s  median {v['median']:.3f} s  max {v['max']:.3f} s")


if __name__ == "__main__":
    main()
