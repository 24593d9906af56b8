"""Simulation cost against the strongest ANN baselines, interleaved in one process.

For each model, the SNN (QCFS conversion) at T and COS (ρ = 4) at T, both in the execution
mode ``simulate`` picks by default (``--snn-mode`` to force one; recorded), are timed on the
same images as ANN baselines built from the *same BN-folded weights*:

* ``relu_eager``    — QCFS activations replaced by in-place ReLU, channels_last, inference
                      mode, at the best of several batch sizes (chosen once, before the rounds);
* ``relu_compiled`` — the same network under ``torch.compile`` (inductor, weights frozen: conv
                      + ReLU (+ residual add) fused, weights prepacked), at *its own* best batch
                      size (compiled and timed for every candidate);
* ``qcfs_eager``    — the BN-folded network with its QCFS activations, NCHW, at the SNN's batch
                      size: the baseline docs/benchmarks.md used before issue #10 (for continuity).

Each round, for each T, times every baseline (one pass over the images, repeated ``--passes``
times) and right after it the SNN and COS runs at that T; ratios are
``SNN(T) / (T × baseline pass)`` against the baseline passes timed next to them, reported as
min / median / max over rounds (fine interleaving keeps ratios usable on a shared machine).
The per-step *target* is the fastest ReLU baseline (the "physical limit": the SNN step runs
the same convolutions on same-shaped dense tensors, plus its state update). Each model gets
enough images for the ANN's best batch size to be a real choice (an SNN folds T frames into
one batch; an ANN limited to a few images would be an unfairly weak baseline).

The whole process runs with :func:`spikebridge.memory_reuse.retain_freed_memory` (ANN and SNN
alike; ``--no-retain-memory`` for glibc's defaults), as the ``spikebridge`` command does.

fashion_cnn uses the shipped checkpoint on Fashion-MNIST test images; resnet20 and vgg16 use
randomly initialised QCFS networks (random BN statistics and θ, seed 0) on random 3×32×32
input — dense convolution cost does not depend on the weights' values or the spike rates.

    python bench/simulation_cost.py --models fashion_cnn --label after [--rounds 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from common import allocator_setting  # bench/ is the script's directory
from torch import nn

import spikebridge as sb
from spikebridge.activations import QCFS
from spikebridge.convert import fold_graph_batchnorms, trace
from spikebridge.models import create_model
from spikebridge.simulate import resolve_mode

# images, SNN batch size, baseline batch-size candidates per model (sized so that one model's
# run stays within a few minutes on 2 cores)
MODEL_SETUPS = {
    "fashion_cnn": {"images": 250, "batch": 250, "candidates": (50, 125, 250)},
    "resnet20": {"images": 128, "batch": 128, "candidates": (16, 32, 64, 128)},
    "vgg16": {"images": 32, "batch": 32, "candidates": (8, 16, 32)},
}


def random_qcfs_model(name: str, seed: int = 0) -> nn.Module:
    """A QCFS network with non-trivial BN statistics and thresholds (as in tests)."""
    torch.manual_seed(seed)
    model = create_model(name, 10, 3)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(0.0, 0.3)
        if isinstance(m, QCFS):
            m.theta.data.uniform_(0.5, 2.0)
    return model.eval()


def model_and_images(name: str, images: int) -> tuple[nn.Module, torch.Tensor]:
    if name == "fashion_cnn":
        from spikebridge.checkpoint import load_checkpoint
        from spikebridge.data import BatchLoader, load_dataset
        from spikebridge.shipped import SHIPPED_MODEL_DIR

        ann, config = load_checkpoint(SHIPPED_MODEL_DIR)
        test = load_dataset(config["dataset"], "test").subset(images, seed=0)
        x = torch.cat([x for x, _ in BatchLoader(test, 1000)])
        return ann.eval(), x
    torch.manual_seed(1)
    return random_qcfs_model(name), torch.randn(images, 3, 32, 32)


def relu_network(ann: nn.Module) -> nn.Module:
    """The BN-folded graph of ``ann`` with every QCFS replaced by an in-place ReLU."""
    folded = trace(ann)
    fold_graph_batchnorms(folded)
    for name, module in list(folded.named_modules()):
        if isinstance(module, QCFS):
            parent, _, child = name.rpartition(".")
            setattr(folded.get_submodule(parent) if parent else folded, child,
                    nn.ReLU(inplace=True))
    return folded.eval()


def qcfs_network(ann: nn.Module) -> nn.Module:
    folded = trace(ann)
    fold_graph_batchnorms(folded)
    return folded.eval()


def one_pass(model, x: torch.Tensor, batch: int, channels_last: bool, grad_mode) -> None:
    with grad_mode():
        for part in x.split(batch):
            if channels_last:
                part = part.contiguous(memory_format=torch.channels_last)
            model(part)


def seconds(fn, repeats: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def wall_and_cpu_seconds(fn, repeats: int = 1) -> tuple[float, float]:
    """Wall seconds and process CPU seconds (all threads) per call: on a shared machine the CPU
    time does not count the time the process waited for a core, so its ratios are steadier."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats


def run_model(name: str, args: argparse.Namespace) -> dict:
    setup = MODEL_SETUPS[name]
    ann, x = model_and_images(name, args.images or setup["images"])
    batch = args.batch_size or setup["batch"]
    relu_cl = relu_network(ann).to(memory_format=torch.channels_last)
    qcfs = qcfs_network(ann)
    snn = sb.convert(ann, "qcfs")
    cos = sb.convert(ann, "cos", rho=args.rho)
    steps = [int(t) for t in args.T.split(",")]

    # best batch size for the eager ReLU baseline (two warm-up and three timed passes each)
    per_batch = {}
    for b in setup["candidates"]:
        if b > x.shape[0]:
            continue
        for _ in range(2):
            one_pass(relu_cl, x, b, True, torch.inference_mode)
        per_batch[b] = min(seconds(lambda b=b: one_pass(relu_cl, x, b, True,
                                                        torch.inference_mode)) for _ in range(3))
    best_batch = min(per_batch, key=per_batch.get)
    print(f"[{name}] eager ReLU pass seconds by batch size: {per_batch} -> {best_batch}",
          flush=True)

    baselines = {
        "relu_eager": lambda: one_pass(relu_cl, x, best_batch, True, torch.inference_mode),
        "qcfs_eager": lambda: one_pass(qcfs, x, batch, False, torch.inference_mode),
    }
    compile_seconds, compiled_per_batch, compiled_batch = None, {}, None
    if args.compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # weights as constants: conv+ReLU fused, prepacked
        compiled = torch.compile(copy.deepcopy(relu_cl), dynamic=False)
        start = time.perf_counter()
        for b in per_batch:  # its own best batch size: one compilation per shape
            one_pass(compiled, x, b, True, torch.no_grad)
            compiled_per_batch[b] = min(seconds(lambda b=b: one_pass(
                compiled, x, b, True, torch.no_grad)) for _ in range(3))
        compile_seconds = time.perf_counter() - start
        compiled_batch = min(compiled_per_batch, key=compiled_per_batch.get)
        print(f"[{name}] compiled ReLU pass seconds by batch size: {compiled_per_batch} -> "
              f"{compiled_batch}", flush=True)
        baselines["relu_compiled"] = lambda: one_pass(compiled, x, compiled_batch, True,
                                                      torch.no_grad)
    cos_mode = "hybrid" if args.snn_mode == "step" else args.snn_mode  # COS starts layer-wise
    runs = {}
    for t in steps:
        runs[f"snn_T{t}"] = (t, lambda t=t: [sb.simulate(snn, part, t, mode=args.snn_mode)
                                            for part in x.split(batch)])
        runs[f"cos_T{t}"] = (t, lambda t=t: [sb.simulate(cos, part, t, mode=cos_mode)
                                            for part in x.split(batch)])
    modes = {"snn": resolve_mode(snn, args.snn_mode, x.device),
             "cos": resolve_mode(cos, cos_mode, x.device)}
    print(f"[{name}] execution modes: {modes}", flush=True)
    for fn in baselines.values():  # warm-up
        fn()
    for _, fn in runs.values():
        fn()

    rounds = []
    for r in range(args.rounds):
        row = {}
        for t in steps:  # baselines re-timed right next to the runs they are compared with
            for k, fn in baselines.items():
                row[f"{k}_pass_s@T{t}"], row[f"{k}_pass_cpu_s@T{t}"] = wall_and_cpu_seconds(
                    fn, args.passes)
            for k, (tk, fn) in runs.items():
                if tk == t:
                    row[f"{k}_s"], row[f"{k}_cpu_s"] = wall_and_cpu_seconds(fn)
        rounds.append(row)
        print(f"[{name}] round {r + 1}/{args.rounds} (load {os.getloadavg()[0]:.2f}): "
              + ", ".join(f"{k}={v:.3f}" for k, v in row.items() if "cpu" not in k), flush=True)

    def spread(values: list[float]) -> dict:
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}

    ratios, cpu_ratios = {}, {}
    for clock, out in (("", ratios), ("cpu_", cpu_ratios)):
        for k, (t, _) in runs.items():
            for base in baselines:
                out[f"{k}/{base}"] = spread([row[f"{k}_{clock}s"]
                                             / (t * row[f"{base}_pass_{clock}s@T{t}"])
                                             for row in rounds])
            out[f"{k}/fastest_relu"] = spread([
                row[f"{k}_{clock}s"] / (t * min(row[f"{b}_pass_{clock}s@T{t}"]
                                                for b in baselines if b != "qcfs_eager"))
                for row in rounds])
    return {"images": int(x.shape[0]), "snn_batch": batch, "baseline_batch": best_batch,
            "eager_relu_pass_by_batch": per_batch, "compile_seconds": compile_seconds,
            "compiled_relu_pass_by_batch": compiled_per_batch,
            "compiled_baseline_batch": compiled_batch, "execution_modes": modes,
            "rho": args.rho, "T": steps, "rounds": rounds, "ratios": ratios,
            "cpu_time_ratios": cpu_ratios}


def kernel_status() -> str:
    try:
        from spikebridge.if_kernel import kernel_status as status
    except ImportError:
        return "eager IF update (no spikebridge.if_kernel in this version)"
    return status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="fashion_cnn,resnet20,vgg16")
    parser.add_argument("--T", default="4,8,32")
    parser.add_argument("--rho", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=2, help="baseline passes per round")
    parser.add_argument("--images", type=int, default=None, help="override the model's default")
    parser.add_argument("--batch-size", type=int, default=None, help="SNN batch size override")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--snn-mode", default="auto", choices=("auto", "step", "layer"),
                        help="execution mode of the SNN and COS runs (COS: step means hybrid)")
    parser.add_argument("--no-retain-memory", dest="retain_memory", action="store_false",
                        help="keep glibc's default (unmap freed large blocks) for the whole "
                             "process; default: spikebridge.memory_reuse, for ANN and SNN alike")
    parser.add_argument("--label", default="run")
    parser.add_argument("--out-dir", type=Path, default=Path("bench/results/simulation_cost"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    allocator = allocator_setting(args.retain_memory)
    for name in args.models.split(","):
        started = time.perf_counter()
        load_before = os.getloadavg()
        result = {"model": name, "label": args.label, "threads": torch.get_num_threads(),
                  "torch": torch.__version__, "machine": platform.processor() or
                  platform.machine(), "if_update": kernel_status(), "allocator": allocator,
                  "load_avg_before": load_before, **run_model(name, args)}
        result["load_avg_after"] = os.getloadavg()
        result["wall_seconds"] = time.perf_counter() - started
        args.out_dir.mkdir(parents=True, exist_ok=True)
        path = args.out_dir / f"{args.label}_{name}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: round(v["median"], 3) for k, v in result["cpu_time_ratios"].items()}))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
