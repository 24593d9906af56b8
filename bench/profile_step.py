"""Where a simulation step goes: convolutions vs IF updates vs the rest vs Python overhead.

Profiles ``simulate(..., mode="step")`` at T and ``T ×`` the eager channels_last ReLU forward on
the same images (torch.profiler, self CPU time per ATen op, grouped), plus the wall time not
covered by ATen ops (framework/Python overhead).

    python bench/profile_step.py [--model fashion_cnn] [--T 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import allocator_setting  # bench/ is the script's directory
from simulation_cost import MODEL_SETUPS, model_and_images, relu_network
from torch.profiler import ProfilerActivity, profile

import spikebridge as sb
from spikebridge.simulate import resolve_mode

GROUPS = {
    "convolution": ("aten::mkldnn_convolution", "aten::convolution_overrideable",
                    "aten::_convolution", "aten::thnn_conv2d", "aten::_slow_conv2d_forward"),
    "linear": ("aten::addmm", "aten::mm", "aten::linear"),
    "pooling": ("aten::avg_pool2d", "aten::adaptive_avg_pool2d", "aten::mean"),
    "activation / IF update": ("aten::relu_", "aten::clamp_min_", "aten::relu", "aten::add_",
                               "aten::ge", "aten::sub_", "aten::mul_",
                               "spikebridge::fused_if_step", "spikebridge::fused_if_scan",
                               "aten::select", "aten::view",
                               "aten::as_strided"),
    "copies / allocation": ("aten::copy_", "aten::empty", "aten::empty_like",
                            "aten::empty_strided", "aten::clone", "aten::fill_", "aten::stack",
                            "aten::cat", "aten::contiguous", "aten::_to_copy"),
}


def grouped(prof) -> dict:
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        group = next((g for g, names in GROUPS.items() if event.key in names), "other ops")
        totals[group] = totals.get(group, 0.0) + event.self_cpu_time_total / 1e6
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="fashion_cnn")
    parser.add_argument("--T", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--mode", default="auto", choices=("auto", "step", "layer"),
                        help="the SNN's execution mode (default: what simulate picks)")
    parser.add_argument("--no-retain-memory", dest="retain_memory", action="store_false",
                        help="glibc's default allocator setting for the whole process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"allocator: {allocator_setting(args.retain_memory)}")
    setup = MODEL_SETUPS[args.model]
    ann, x = model_and_images(args.model, setup["batch"])
    snn = sb.convert(ann, "qcfs")
    relu = relu_network(ann).to(memory_format=torch.channels_last)
    xcl = x.contiguous(memory_format=torch.channels_last)

    def ann_run() -> None:
        with torch.inference_mode():
            for _ in range(args.T):
                relu(xcl)

    def snn_run() -> None:
        sb.simulate(snn, x, args.T, mode=args.mode)

    mode = resolve_mode(snn, args.mode, x.device)
    result = {"snn_mode": mode}
    for name, fn in (("relu_forward_x_T", ann_run), (f"snn_{mode}", snn_run)):
        fn()
        start = time.perf_counter()
        fn()
        wall = time.perf_counter() - start
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        groups = grouped(prof)
        ops = sum(groups.values())
        result[name] = {"wall_s_unprofiled": wall, "op_self_cpu_s": groups,
                        "op_total_s": ops, "outside_ops_s": max(0.0, wall - ops)}
        print(f"{name}: wall {wall:.3f} s (unprofiled), of which outside ops (Python, "
              f"dispatch) ≈ {max(0.0, wall - ops):.3f} s; op self time by group:")
        for g, s in sorted(groups.items(), key=lambda kv: -kv[1]):
            print(f"  {g:24s} {s:7.3f} s  {100 * s / ops:5.1f} %")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
