"""Result files and console tables: JSON (+ CSV) and PNG plots, written atomically.

The evaluation record (one per method) is the schema of ``spikebridge evaluate --json``::

    {"dataset", "model", "method", "params": {...}, "ann_accuracy",
     "snn_accuracy": {"1": ..., "2": ...}, "n_samples",
     "latency": {"T": {"presimulation": ρ·iterations, "inference": T,
                       "presented": ρ·iterations + T, "frames_per_layer": ..., "total": ...}},
     "ops": {"T": {"snn_sops", "snn_first_layer_macs", "ann_macs", "sops_per_mac",
                   "energy_pj": {"snn", "ann"}, "ratio", ...}},
     "operations": {"conventions", "layers", "per_step", "ann_layers"}, ...}

(``ops``/``operations`` per image, docs/energy.md; absent when counting was switched off.)

Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_bytes, atomic_write_json
from .energy import AC_PJ_45NM, MAC_PJ_45NM, OperationReport, ops_from_mapping
from .evaluation import Evaluation
from .network import SpikingNetwork

__all__ = [
    "CSV_COLUMNS",
    "csv_values",
    "evaluation_record",
    "format_energy_table",
    "plot_accuracy_vs_energy",
    "plot_layer_operations",
    "record_fields",
    "format_accuracy_table",
    "format_offset_table",
    "plot_accuracy",
    "plot_offsets",
    "plot_title",
    "series_label",
    "write_csv",
    "write_json",
]


#: CSV columns added by :func:`csv_values` (one row per method and T).
CSV_COLUMNS = ("snn_sops", "snn_sops_presimulation", "snn_first_layer_macs", "ann_macs",
               "sops_per_mac", "energy_snn_pj", "energy_ann_pj", "energy_ratio", "firing_rate")


def record_fields(operations: OperationReport | None, steps: Sequence[int]) -> dict[str, Any]:
    """``{"ops": {T: totals}, "operations": {...}}`` for a result record (empty if not counted).

    ``ops[T]``: ``snn_sops``, ``snn_first_layer_macs``, ``ann_macs``, ``sops_per_mac``,
    ``energy_pj`` (``snn``, ``ann``), ``ratio`` and the breakdown of :class:`OperationReport`;
    ``operations``: conventions, per-layer counts per T, SOPs per step, ANN MACs per layer.
    """
    if operations is None:
        return {}
    wanted = [int(t) for t in steps]
    details = operations.to_dict()
    details["layers"] = {name: {str(t): per_t[str(t)] for t in wanted if str(t) in per_t}
                         for name, per_t in details["layers"].items()}
    del details["per_T"]
    return {"ops": operations.ops_record(wanted), "operations": details}


def csv_values(record: Mapping[str, Any], t: int | str) -> list[str]:
    """The :data:`CSV_COLUMNS` of ``record`` at ``T = t`` (empty strings if not counted)."""
    ops = ops_from_mapping(record, t)
    if ops is None:
        return [""] * len(CSV_COLUMNS)

    def fmt(value: Any) -> str:
        if value is None:
            return ""
        return f"{value:.6g}" if isinstance(value, float) and not float(value).is_integer() \
            else f"{value:.0f}"

    return [fmt(ops["snn_sops"]), fmt(ops["snn_sops_presimulation"]),
            fmt(ops["snn_first_layer_macs"]), fmt(ops["ann_macs"]),
            fmt(ops["sops_per_mac"]), fmt(ops["energy_pj"]["snn"]), fmt(ops["energy_pj"]["ann"]),
            fmt(ops["ratio"]), fmt(ops["firing_rate"])]


def evaluation_record(
    evaluation: Evaluation,
    snn: SpikingNetwork,
    steps: Sequence[int],
    *,
    dataset: str,
    model: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON record of one method's evaluation at the requested ``steps``."""
    method = snn.method
    pre = method.presimulation_steps()
    neurons = list(snn.neurons().values())
    signed = any(n.signed for n in neurons)
    unit = all(n.amplitude == 1.0 for n in neurons)
    return {
        "dataset": dataset,
        "model": model,
        "method": method.name,
        "label": method.name,
        "params": method.params(),
        # what one spike is: binary (1 bit) or signed/ternary (2 bits); unit spikes (weights
        # normalized) or weighted by the layer's threshold (x = θ s)
        "spikes": {"signed": signed, "bits_per_spike": 2 if signed else 1,
                   "value": "unit" if unit else "threshold-weighted"},
        "ann_accuracy": evaluation.ann_accuracy,
        "snn_accuracy": {str(t): evaluation.snn_accuracy[t] for t in steps},
        "n_samples": evaluation.n_samples,
        # presented: steps the input is shown (ρ·iterations + T); frames_per_layer: frames each
        # layer computes (COS: ρ·iterations + max(T, ρ)); total = presented (older name)
        "latency": {str(t): {"presimulation": pre, "inference": t,
                             "presented": method.total_steps(t),
                             "frames_per_layer": method.frames_per_layer(t),
                             "total": method.total_steps(t)}
                    for t in steps},
        "seconds": {"snn": round(evaluation.snn_seconds, 3),
                    "ann": round(evaluation.ann_seconds, 3)},
        # per T: synaptic operations, MACs, SOPs/MAC, energy (docs/energy.md)
        **record_fields(getattr(evaluation, "operations", None), steps),
        **(extra or {}),
    }


def write_json(path: str | Path, data: Any) -> Path:
    atomic_write_json(path, data)
    return Path(path)


def write_csv(path: str | Path, records: Sequence[dict[str, Any]]) -> Path:
    """One row per (method, T): method, params, T, total steps, SNN and ANN accuracy, spikes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "label", "params", "model", "T", "total_steps",
                     "frames_per_layer", "snn_accuracy",
                     "ann_accuracy", "n_samples", "signed_spikes", "bits_per_spike",
                     "weight_bits", *CSV_COLUMNS])
    for rec in records:
        params = ";".join(f"{k}={v}" for k, v in rec["params"].items())
        spikes = rec.get("spikes", {})
        for t, acc in rec["snn_accuracy"].items():
            writer.writerow([rec["method"], _label(rec), params, rec["model"], t,
                             rec["latency"][t]["total"],
                             rec["latency"][t].get("frames_per_layer", ""), f"{acc:.6f}",
                             "" if rec["ann_accuracy"] is None else f"{rec['ann_accuracy']:.6f}",
                             rec["n_samples"], spikes.get("signed", ""),
                             spikes.get("bits_per_spike", ""), rec.get("weight_bits") or "",
                             *csv_values(rec, t)])
    atomic_write_bytes(path, buffer.getvalue().encode())
    return Path(path)


def _label(rec: dict[str, Any]) -> str:
    params = rec["params"]
    if rec.get("label") not in (None, rec["method"]) and rec["method"] != "cos":
        return rec["label"]
    if rec["method"] == "cos":
        text = f"cos ρ={params['rho']}"
        if params.get("iterations", 1) != 1:
            text += f" k={params['iterations']}"
        if params.get("variant") == "lightweight":
            text += " light"
        return text
    return rec["method"]


def format_accuracy_table(records: Sequence[dict[str, Any]]) -> str:
    """A console table: one row per method, one column per T, its ANN's accuracy (percent).

    With a single source model the ANN is its own first row; with several (methods for
    different kinds of ANN) each row shows the accuracy of the ANN it was converted from.
    """
    steps = list(records[0]["snn_accuracy"])
    width = max(16, *(len(_label(rec)) + 2 for rec in records))
    models = {rec["model"] for rec in records}
    single = len(models) == 1
    head = f"{'':<{width}}" + ("" if single else f"{'ANN':>9}")
    head += "".join(f"{'T=' + t:>9}" for t in steps)
    lines = [head]
    ann = records[0]["ann_accuracy"]
    if single and ann is not None:
        lines.append(f"{'ANN':<{width}}" + f"{ann * 100:>9.2f}" * len(steps))
    for rec in records:
        row = f"{_label(rec):<{width}}"
        if not single:
            ann_rec = rec["ann_accuracy"]
            row += f"{'-':>9}" if ann_rec is None else f"{ann_rec * 100:>9.2f}"
        row += "".join(f"{rec['snn_accuracy'][t] * 100:>9.2f}" if t in rec["snn_accuracy"]
                       else f"{'-':>9}" for t in steps)
        lines.append(row)
    note = f"accuracy in % on {records[0]['n_samples']} test images of {records[0]['dataset']}"
    if not single:
        note += f"; source models: {', '.join(sorted(models))}"
    if any(rec["method"] == "cos" for rec in records):
        note += "; COS additionally pre-simulates ρ·iterations steps"
    lines.append(note)
    return "\n".join(lines)


def format_offset_table(reports: dict[int, Any]) -> str:
    """Output-layer Ratio / MSE per number of COS iterations (COS paper Table 3 layout)."""
    lines = [f"{'iterations':>10} {'Ratio %':>9} {'MSE(count)':>11} {'MSE(rate)':>10} "
             f"{'acc %':>7}"]
    for k, rep in reports.items():
        out = rep.output_layer
        lines.append(f"{k:>10} {out['ratio'] * 100:>9.2f} {out['mse_count']:>11.4f} "
                     f"{out['mse_rate']:>10.5f} {rep.accuracy * 100:>7.2f}")
    first = next(iter(reports.values()))
    lines.append(f"output layer = last IF layer ({list(first.layers)[-1]}); T = {first.steps}; "
                 f"{first.n_samples} test images")
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def _models(records: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(rec["model"] for rec in records))


def plot_title(records: Sequence[dict[str, Any]], what: str = "") -> str:
    """``model on dataset`` for one model, ``N models on dataset`` for several."""
    models = _models(records)
    subject = models[0] if len(models) == 1 else f"{len(models)} models"
    return f"{subject} on {records[0]['dataset']}{': ' + what if what else ''}"


def series_label(rec: dict[str, Any], records: Sequence[dict[str, Any]]) -> str:
    """A curve's legend entry: the method, plus its model when the plot shows several, plus
    COS's pre-simulation (its results at T are presented for ρ·iterations + T steps)."""
    label = _label(rec)
    pre = next(iter(rec.get("latency", {}).values()), {}).get("presimulation", 0)
    if pre:
        label += f" (+{pre} pre-sim. steps)"
    if len(_models(records)) > 1:
        label += f" — {rec['model']}"
    return label


_ANN_STYLES = ("--", ":", "-.", (0, (5, 1)))


def plot_accuracy(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Accuracy vs T (log2 axis), one line per method (and model), each model's ANN as a
    dashed reference line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for rec in records:
        steps = [int(t) for t in rec["snn_accuracy"]]
        ax.plot(steps, [rec["snn_accuracy"][str(t)] * 100 for t in steps], marker="o",
                label=series_label(rec, records))
    anns = {}
    for rec in records:
        if rec.get("ann_accuracy") is not None:
            anns.setdefault(rec["model"], rec["ann_accuracy"])
    for k, (model, ann) in enumerate(anns.items()):
        name = "ANN" if len(_models(records)) == 1 else f"ANN {model}"
        ax.axhline(ann * 100, color="black", linestyle=_ANN_STYLES[k % len(_ANN_STYLES)],
                   linewidth=1, label=f"{name} {ann * 100:.2f}%")
    ax.set_xscale("log", base=2)
    all_steps = sorted({int(t) for rec in records for t in rec["snn_accuracy"]})
    ax.set_xticks(all_steps, [str(t) for t in all_steps])
    ax.set_xlabel("time-steps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or plot_title(records), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside, not over
    path = _save_figure(fig, path)
    plt.close(fig)
    return path


def plot_offsets(reports: dict[int, Any], path: str | Path) -> Path:
    """Per-layer bar charts of the offset-spike distribution for each iteration count."""
    plt = _pyplot()
    first = next(iter(reports.values()))
    layers = list(first.layers)
    cols = min(len(layers), 3)
    rows = -(-len(layers) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False,
                             constrained_layout=True)
    values = [-3, -2, -1, 0, 1, 2, 3]
    width = 0.8 / len(reports)
    for idx, name in enumerate(layers):
        ax = axes[idx // cols][idx % cols]
        for j, (k, rep) in enumerate(reports.items()):
            dist = rep.layers[name]["distribution"]
            heights = [dist[str(v)] * 100 for v in values]
            label = "no calibration" if k == 0 else f"COS, {k} iteration(s)"
            ax.bar([v + (j - (len(reports) - 1) / 2) * width for v in values], heights, width,
                   label=label)
        ax.set_yscale("log")
        ax.set_title(f"IF layer {idx + 1}: {name}", fontsize=9)
        ax.set_xlabel("offset spikes ψ")
        ax.set_ylabel("% of neurons")
        ax.set_xticks(values)
    for idx in range(len(layers), rows * cols):
        axes[idx // cols][idx % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(reports), fontsize=8)
    fig.suptitle(f"offset-spike distribution per IF layer (T = {first.steps})")
    path = _save_figure(fig, path)
    plt.close(fig)
    return path


# energy: tables and plots of the operation counts (docs/energy.md)

def _presimulation_note(records: Sequence[Mapping[str, Any]]) -> str:
    """``"; COS pre-simulation included"`` when some method's counts include pre-simulation."""
    methods = list(dict.fromkeys(
        rec["method"].upper() for rec in records
        if any((ops or {}).get("snn_sops_presimulation") for ops in rec["ops"].values())))
    return f"; {', '.join(methods)} pre-simulation included" if methods else ""


def format_energy_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Console table: per method, SOPs per image, SOPs per ANN MAC and E_SNN/E_ANN at each T."""
    counted = [rec for rec in records if rec.get("ops")]
    if not counted:
        return ""
    steps = list(dict.fromkeys(t for rec in counted for t in rec["ops"]))
    width = max(24, *(len(_label(dict(rec))) + 14 for rec in counted))
    lines = [f"{'':<{width}}" + "".join(f"{'T=' + t:>9}" for t in steps)]
    rows = (("SOPs (M)", lambda o: o["snn_sops"] / 1e6),
            ("SOPs/MAC", lambda o: o["sops_per_mac"]),
            ("E SNN/ANN", lambda o: o["ratio"]))
    for rec in counted:
        for name, value in rows:
            row = f"{_label(dict(rec)) + '  ' + name:<{width}}"
            for t in steps:
                ops = rec["ops"].get(t)
                number = None if ops is None else value(ops)
                row += f"{'-':>9}" if number is None else f"{number:>9.3g}"
            lines.append(row)
        latency = rec.get("latency", {})
        frames = {t: latency.get(t, {}).get("frames_per_layer") for t in steps}
        if any(f is not None and str(f) != t for t, f in frames.items()):
            # COS: what every layer computes, ρ·iterations + max(T, ρ), is not T
            lines.append(f"{_label(dict(rec)) + '  frames/layer':<{width}}" + "".join(
                f"{'-' if frames[t] is None else frames[t]:>9}" for t in steps))
    first = counted[0]["ops"][next(iter(counted[0]["ops"]))]
    conv = counted[0].get("operations", {}).get("conventions", {})
    lines.append(
        f"per image; ANN: {first['ann_macs'] / 1e6:.4g} M MACs = "
        f"{first['energy_pj']['ann'] / 1e6:.4g} µJ ({conv.get('mac_pj', MAC_PJ_45NM)} pJ/MAC, "
        f"{conv.get('ac_pj', AC_PJ_45NM)} pJ/AC); SNN first layer "
        + _FIRST_LAYER_NOTES.get(conv.get("first_layer", "once"), "counted at every step")
        + _presimulation_note(counted) + " (docs/energy.md)")
    return "\n".join(lines)


# how the counter charged the SNN's first synaptic layer (OperationReport conventions)
_FIRST_LAYER_NOTES = {
    "once": "counted once",
    "per_event": "charged per input event and fan-out",
}


def plot_accuracy_vs_energy(records: Sequence[Mapping[str, Any]], path) -> Any:
    """Accuracy vs SNN energy per image (log axis), one curve per method (and model), points
    labelled with T — points of equal cost share one label (COS at every T ≤ ρ computes the same
    frames) — and each model's ANN as a marker at its own energy (ECC paper Fig. 3 style)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    anns: dict[str, tuple[float, float]] = {}
    colors: dict[str, str] = {}
    same_cost = False
    for rec in records:
        ops = rec.get("ops") or {}
        steps = [t for t in rec["snn_accuracy"] if t in ops]
        if not steps:
            continue
        energy = [ops[t]["energy_pj"]["snn"] / 1e6 for t in steps]
        accuracy = [rec["snn_accuracy"][t] * 100 for t in steps]
        (line,) = ax.plot(energy, accuracy, marker="o", label=series_label(rec, records))
        colors.setdefault(rec["model"], line.get_color())
        # one label for points that would print on top of each other (within 4 % in energy
        # and 1.5 points in accuracy); equal cost is flagged below
        groups: list[list[int]] = []
        for i, e in enumerate(energy):
            near = next((g for g in groups if abs(math.log(energy[g[0]] / e)) < 0.04
                         and abs(accuracy[g[0]] - accuracy[i]) < 1.5), None)
            near.append(i) if near is not None else groups.append([i])
        for members in groups:
            top = max(members, key=lambda i: accuracy[i])
            text = "T=" + ",".join(steps[i] for i in members)
            same_cost |= len(members) > 1 and max(energy[i] for i in members) <= 1.001 * min(
                energy[i] for i in members)
            ax.annotate(text, (energy[top], accuracy[top]), textcoords="offset points",
                        xytext=(4, 4 if len(members) == 1 else -11), fontsize=7,
                        color=line.get_color())
        if rec.get("ann_accuracy") is not None:
            anns.setdefault(rec["model"], (ops[steps[0]]["energy_pj"]["ann"] / 1e6,
                                           rec["ann_accuracy"] * 100))
    markers = ("*", "P", "X", "D")
    for k, (model, (e, a)) in enumerate(anns.items()):
        one = len(anns) == 1
        ax.plot([e], [a], marker=markers[k % len(markers)], markersize=12 if one else 9,
                color="black" if one else colors.get(model, "black"),
                markeredgecolor="black", linestyle="none",
                label=f"{'ANN' if one else 'ANN ' + model} ({a:.2f}%)")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, NullFormatter  # matplotlib only when plotting

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    low, high = ax.get_xlim()

    def minor(v: float, _pos: int) -> str:  # 2 and 5 of each decade: readable, never crowded
        lead = round(v / 10 ** math.floor(math.log10(v)), 6) if v > 0 else 0
        return f"{v:g}" if lead in (2.0, 5.0) else ""

    ax.xaxis.set_minor_formatter(FuncFormatter(minor) if high / low < 1e4 else NullFormatter())
    ax.tick_params(axis="x", which="both", labelsize=8)
    ax.set_xlabel("energy per image (µJ, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(plot_title(records, "accuracy vs energy"), fontsize=10)
    if same_cost:
        fig.text(0.01, -0.02, "Points sharing a label and an energy cost the same: COS "
                 "computes ρ·iterations + ρ frames per layer at every T ≤ ρ (docs/energy.md).",
                 fontsize=7, va="top")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside, not over
    out = _save_figure(fig, path)
    plt.close(fig)
    return out


def plot_layer_operations(runs: Mapping[str, Mapping[str, Any]], t: int | str, path) -> Any:
    """Per IF layer: firing rate and synaptic operations received, one bar group per run.

    ``runs``: ``{label: record}`` (records with ``operations``); ``t``: the T to show.
    """
    plt = _pyplot()
    t = str(t)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 5.6), constrained_layout=True)
    labels = list(runs)
    first = runs[labels[0]]["operations"]["layers"]
    sources = [name for name, per_t in first.items() if "firing_rate" in per_t.get(t, {})]
    targets = [name for name, per_t in first.items() if "sops_in" in per_t.get(t, {})]
    width = 0.8 / len(labels)
    for j, label in enumerate(labels):
        layers = runs[label]["operations"]["layers"]
        offset = (j - (len(labels) - 1) / 2) * width
        top.bar([i + offset for i in range(len(sources))],
                [layers[n][t]["firing_rate"] for n in sources], width, label=label)
        real = [layers[n][t]["sops_in"] / 1e6 for n in targets]
        replay = [layers[n][t].get("sops_in_presimulation", 0.0) / 1e6 for n in targets]
        bars = bottom.bar([i + offset for i in range(len(targets))], real, width, label=label)
        if any(replay):  # COS: the pre-simulation replays, stacked and hatched
            bottom.bar([i + offset for i in range(len(targets))], replay, width, bottom=real,
                       color=bars.patches[0].get_facecolor(), alpha=0.45, hatch="//",
                       label=f"{label}: pre-simulation")
    macs = [first[n][t].get("ann_macs_in", 0) / 1e6 for n in targets]
    bottom.plot(range(len(targets)), macs, "k_", markersize=18, label="ANN MACs")
    top.set_xticks(range(len(sources)), sources, rotation=30, fontsize=7)
    bottom.set_xticks(range(len(targets)), targets, rotation=30, fontsize=7)
    top.set_ylabel("spikes / neuron / step")
    bottom.set_ylabel("SOPs received (M / image)")
    top.set_title(f"firing rate per IF layer (T = {t})", fontsize=10)
    bottom.set_title(f"synaptic operations per layer (T = {t}; COS: its real frames, ρ at least, "
                     "and its pre-simulation replays hatched; the bars sum to the total)",
                     fontsize=9)
    top.legend(fontsize=8)
    bottom.legend(fontsize=8)
    out = _save_figure(fig, path)
    plt.close(fig)
    return out
