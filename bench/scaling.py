"""Scaling curves of the simulator: time and peak memory vs T, vs batch size, vs model size.

* vs T (1 … 256): fashion_cnn, batch 100, step mode (and layer mode up to T = 64), with the
  least-squares fit ``seconds = a + b·T`` and ``peak MiB = c + d·T``;
* vs batch size (1 … 200): fashion_cnn, T = 32, step mode, seconds per image;
* vs model size: fashion_cnn (28×28), resnet20 and vgg16 (32×32, random QCFS weights), T = 32,
  step mode, seconds per image-step next to the eager ReLU ANN forward per image.

Peak memory is the peak resident set size during the run minus the resident size before it,
sampled every millisecond; the script re-executes itself with ``MALLOC_MMAP_THRESHOLD_=65536`` so
that freed tensors go back to the OS and the resident size follows live tensor memory.

    python bench/scaling.py [--threads 2]   # bench/results/scaling.json, docs/scaling.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

if os.environ.get("MALLOC_MMAP_THRESHOLD_") != "65536":
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch  # noqa: E402
from simulation_cost import model_and_images, relu_network  # noqa: E402

import spikebridge as sb  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def measure(fn) -> tuple[float, float]:
    """(seconds, peak MiB above the resident size at the start) of one call of ``fn``."""
    base = resident_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    peak[0] = max(peak[0], resident_bytes())
    return seconds, (peak[0] - base) / 2**20


def linear_fit(xs: list[float], ys: list[float]) -> dict:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = my - slope * mx
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - my) ** 2 for y in ys) or 1.0
    return {"intercept": intercept, "slope": slope, "r2": 1 - ss_res / ss_tot}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/scaling.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/scaling.png"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict = {"threads": args.threads, "torch": torch.__version__,
                    "load_avg_before": os.getloadavg()}

    ann, x = model_and_images("fashion_cnn", 100)
    snn = sb.convert(ann, "qcfs")
    sb.simulate(snn, x, 4)  # warm-up
    steps = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    vs_t = {"T": steps, "step_s": [], "step_mib": [], "layer_T": [], "layer_s": [],
            "layer_mib": []}
    for t in steps:
        s, m = measure(lambda t=t: sb.simulate(snn, x, t, mode="step"))
        vs_t["step_s"].append(s)
        vs_t["step_mib"].append(m)
        if t <= 64:
            s, m = measure(lambda t=t: sb.simulate(snn, x, t, mode="layer"))
            vs_t["layer_T"].append(t)
            vs_t["layer_s"].append(s)
            vs_t["layer_mib"].append(m)
        print(f"T={t}: step {vs_t['step_s'][-1]:.3f} s {vs_t['step_mib'][-1]:.1f} MiB", flush=True)
    vs_t["step_time_fit"] = linear_fit(steps, vs_t["step_s"])
    vs_t["step_memory_fit"] = linear_fit(steps, vs_t["step_mib"])
    vs_t["layer_time_fit"] = linear_fit(vs_t["layer_T"], vs_t["layer_s"])
    vs_t["layer_memory_fit"] = linear_fit(vs_t["layer_T"], vs_t["layer_mib"])
    result["vs_T"] = vs_t

    ann, x = model_and_images("fashion_cnn", 200)
    snn = sb.convert(ann, "qcfs")
    vs_b = {"batch": [1, 8, 32, 100, 200], "seconds_per_image": [], "mib": []}
    for b in vs_b["batch"]:
        images = x[: max(b, min(200, 8 * b))]
        sb.simulate(snn, images[:b], 32)

        def run(b=b, images=images):
            for part in images.split(b):
                sb.simulate(snn, part, 32, mode="step")

        s, m = measure(run)
        vs_b["seconds_per_image"].append(s / images.shape[0])
        vs_b["mib"].append(m)
        print(f"batch={b}: {vs_b['seconds_per_image'][-1] * 1e3:.2f} ms/image", flush=True)
    result["vs_batch"] = vs_b

    vs_model = {"model": [], "images": [], "snn_s_per_image_step": [], "relu_s_per_image": [],
                "snn_mib": []}
    for name, images in (("fashion_cnn", 100), ("resnet20", 16), ("vgg16", 4)):
        ann, x = model_and_images(name, images)
        snn = sb.convert(ann, "qcfs")
        relu = relu_network(ann).to(memory_format=torch.channels_last)
        xcl = x.contiguous(memory_format=torch.channels_last)
        sb.simulate(snn, x, 4)
        with torch.inference_mode():
            relu(xcl)
            relu_s, _ = measure(lambda relu=relu, xcl=xcl: [relu(xcl) for _ in range(4)])
        s, m = measure(lambda snn=snn, x=x: sb.simulate(snn, x, 32, mode="step"))
        vs_model["model"].append(name)
        vs_model["images"].append(images)
        vs_model["snn_s_per_image_step"].append(s / (32 * images))
        vs_model["relu_s_per_image"].append(relu_s / (4 * images))
        vs_model["snn_mib"].append(m)
        print(f"{name}: {s / (32 * images) * 1e3:.3f} ms per image-step, ReLU forward "
              f"{relu_s / (4 * images) * 1e3:.3f} ms per image", flush=True)
    result["vs_model"] = vs_model
    result["load_avg_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.plot)
    print(f"wrote {args.out} and {args.plot}")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    vs_t = result["vs_T"]
    ax = axes[0, 0]
    fit = vs_t["step_time_fit"]
    ax.loglog(vs_t["T"], vs_t["step_s"], "o-", label="step mode")
    ax.loglog(vs_t["layer_T"], vs_t["layer_s"], "s-", label="layer mode")
    ax.loglog(vs_t["T"], [fit["intercept"] + fit["slope"] * t for t in vs_t["T"]], "k--",
              label=f"fit {fit['intercept']:.3f} + {fit['slope'] * 1e3:.1f} ms·T "
                    f"(R²={fit['r2']:.4f})")
    ax.set(xlabel="T (time-steps)", ylabel="seconds (100 images)",
           title="fashion_cnn: time vs T")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.semilogx(vs_t["T"], vs_t["step_mib"], "o-", label="step mode")
    ax.semilogx(vs_t["layer_T"], vs_t["layer_mib"], "s-", label="layer mode")
    ax.set(xlabel="T (time-steps)", ylabel="peak MiB above start",
           title="fashion_cnn: peak memory vs T (batch 100)")
    ax.legend(fontsize=8)
    vs_b = result["vs_batch"]
    ax = axes[1, 0]
    ax.semilogx(vs_b["batch"], [s * 1e3 for s in vs_b["seconds_per_image"]], "o-")
    ax.set(xlabel="batch size", ylabel="ms per image (T = 32)",
           title="fashion_cnn: time per image vs batch size")
    vs_m = result["vs_model"]
    ax = axes[1, 1]
    pos = range(len(vs_m["model"]))
    ax.bar([p - 0.2 for p in pos], [s * 1e3 for s in vs_m["snn_s_per_image_step"]], 0.4,
           label="SNN, per image-step")
    ax.bar([p + 0.2 for p in pos], [s * 1e3 for s in vs_m["relu_s_per_image"]], 0.4,
           label="ReLU ANN forward, per image")
    ax.set_yscale("log")
    ax.set_xticks(list(pos), vs_m["model"])
    ax.set(ylabel="ms (log)", title="model size: SNN step vs ReLU forward (T = 32)")
    ax.legend(fontsize=8)
    fig.suptitle(f"spikebridge scaling, {result['threads']} CPU threads, torch {result['torch']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
