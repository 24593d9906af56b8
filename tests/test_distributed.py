"""Multi-process training and evaluation (torch.distributed, gloo on this CPU; docs/distributed.md).

The claims, each with a test that fails if it does not hold:

* 2-process DDP training equals one process on the same global batch (weights within float
  tolerance), including the augmentation and the shuffle order;
* 2-process evaluation gives exactly the one-process correct counts at every T, for QCFS and
  COS, and the operation counts summed over the processes;
* only rank 0 writes (checkpoints, JSON/CSV/PNG results), and a failure in any rank is raised in
  the launching process with its own message instead of hanging;
* the CLI: ``spikebridge train --nproc 2`` writes one checkpoint, ``evaluate --nproc 2`` the
  one-process result.

Processes are spawned (each imports torch: a few seconds per launch on this machine).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

import spikebridge.models as models_module
import spikebridge.train as train_module
from spikebridge import distributed
from spikebridge.checkpoint import CheckpointError, CheckpointWriter, load_checkpoint
from spikebridge.cli import main
from spikebridge.convert import convert
from spikebridge.data import load_dataset
from spikebridge.data.imagefolder import (
    SeededSampler,
    _SeededDistributedSampler,
    load_streaming_dataset,
    make_loader,
)
from spikebridge.data.loader import BatchLoader
from spikebridge.data.pipeline import RankShare, evaluation_loader, training_loader
from spikebridge.evaluation import evaluate
from spikebridge.models import create_model, list_models, register_model
from spikebridge.train import TrainConfig, train

pytest.importorskip("sklearn")  # the digits data set
pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(),
                                reason="torch.distributed without the gloo backend")

# --------------------------------------------------------------------------------------------
# a model without BatchNorm: on the CPU PyTorch has no SyncBatchNorm, so per-process batch
# statistics would (by design, docs/distributed.md) differ from one process's; without BN the
# DDP step is mathematically the one-process step and only float summation order differs.

NO_BN_MODEL = "ddp_test_no_bn"
STREAMED_MODEL = "ddp_test_streamed"


class _NoBatchNorm(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, activation) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), activation(), nn.AvgPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), activation(), nn.AvgPool2d(2), nn.Flatten(),
            nn.Linear(16 * 2 * 2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _register_test_models() -> None:
    """Register this module's models (in a spawned process: for its lifetime)."""
    for name, constructor in ((NO_BN_MODEL, _NoBatchNorm), (STREAMED_MODEL, _Streamed)):
        if name not in list_models():
            register_model(name)(constructor)


@pytest.fixture(autouse=True)
def test_models(monkeypatch):
    """This module's models, registered for each test only (the registry is global)."""
    for name, constructor in ((NO_BN_MODEL, _NoBatchNorm), (STREAMED_MODEL, _Streamed)):
        monkeypatch.setitem(models_module._REGISTRY, name, constructor)


def _config(**changes) -> TrainConfig:
    # 4 steps of a global batch of 64 with crop + flip augmentation; lr high enough to move
    settings = dict(architecture=NO_BN_MODEL, dataset="digits", epochs=2, batch_size=64,
                    lr=0.05, train_subset=128, seed=3, augment=True)
    return TrainConfig(**{**settings, **changes})


def _train_in_process_group(cfg: TrainConfig, out: str, reports: str, options: dict) -> None:
    """One rank of a DDP run; records which CheckpointWriter calls this rank made."""
    calls: list[str] = []

    class Recording(CheckpointWriter):
        def __init__(self, *args, **kwargs) -> None:
            calls.append("open")
            super().__init__(*args, **kwargs)

        def commit(self, *args, **kwargs):
            calls.append("commit")
            return super().commit(*args, **kwargs)

    train_module.CheckpointWriter = Recording
    _register_test_models()
    with distributed.process_group("cpu"):
        train(cfg, out, progress=False, log=lambda _message: None, **options)
        report = Path(reports, f"rank{distributed.rank()}.json")
        earlier = json.loads(report.read_text()) if report.exists() else []
        report.write_text(json.dumps(earlier + calls))


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    model, config = load_checkpoint(directory)
    return {name: value.detach() for name, value in model.state_dict().items()}, config


def test_ddp_training_equals_one_process_and_only_rank_0_writes(tmp_path):
    """2 epochs in one process vs 1 epoch in 2 processes, then --resume for the second."""
    cfg = _config()
    torch.manual_seed(cfg.seed)
    initial = create_model(NO_BN_MODEL, num_classes=10, in_channels=1,
                           activation=cfg.activation).state_dict()
    train(cfg, tmp_path / "one", progress=False, log=lambda _message: None)
    reports = tmp_path / "reports"
    reports.mkdir()
    for options in ({"stop_after_epoch": 1}, {"resume": True}):
        distributed.launch(2, _train_in_process_group, cfg, str(tmp_path / "two"), str(reports),
                           options)

    one, one_config = _weights(tmp_path / "one")
    two, two_config = _weights(tmp_path / "two")
    assert two_config["processes"] == 2 and one_config["processes"] == 1
    # Tolerance: each step's gradient is the same sum of per-sample gradients, added in another
    # order (2 partial sums + all-reduce instead of one), so only float32 rounding differs:
    # ~1e-7 relative per step, a few steps → well below 1e-5. A wrong split (another shuffle,
    # other augmentation, a rank using the whole batch, no gradient averaging) moves weights by
    # the size of an update, ~1e-3..1e-1 (checked below: training moved them that much).
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6, msg=name)
    moved = max(float((one[n] - initial[n]).abs().max()) for n in one)
    assert moved > 1e-2
    differ = max(float((two[n] - one[n]).abs().max()) for n in one)
    print(f"\nDDP (2 gloo processes) vs one process: weights moved by up to {moved:.3g}, "
          f"differ by at most {differ:.3g}")  # shown with pytest -s (docs/benchmarks.md §9)
    for a, b in zip(one_config["history"], two_config["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["train_accuracy"] == a["train_accuracy"]  # counts summed over the ranks
        assert b["test_accuracy"] == a["test_accuracy"]
    # only rank 0 opened and committed the checkpoint (once per run and epoch)
    calls = {r: json.loads((reports / f"rank{r}.json").read_text()) for r in (0, 1)}
    assert calls == {0: ["open", "commit", "open", "commit"], 1: []}
    assert len(list((tmp_path / "two" / "snapshots").iterdir())) == 1


# --------------------------------------------------------------------------------------------
# evaluation


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    """A fashion_cnn (with BatchNorm) trained on digits by `spikebridge train --nproc 2`."""
    out = tmp_path_factory.mktemp("cli") / "digits"
    argv = ["train", "--nproc", "2", "--dataset", "digits", "--epochs", "1", "--batch-size", "64",
            "--lr", "0.05", "--quiet", "--out", str(out)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["spikebridge", *argv])  # the command the checkpoint records
        assert main(argv) == 0
    return out


def test_cli_train_nproc_writes_one_checkpoint(digits_checkpoint):
    model, config = load_checkpoint(digits_checkpoint)  # manifest verified
    assert config["processes"] == 2 and config["epochs_completed"] == 1
    assert "--nproc 2" in config["command"]
    assert [p.name for p in (digits_checkpoint / "snapshots").iterdir()] == [
        (digits_checkpoint / "current").readlink().name]
    assert config["test_accuracy"] > 0.3  # it learned something in one epoch


METHODS = {"qcfs": {}, "cos": {"rho": 2}}
STEPS = [1, 2, 3, 4, 6, 8]


def _evaluate_all(model_dir: str, batch_size: int, reports: str | None = None) -> dict:
    """Accuracy at every T, ANN accuracy and SOPs per T for each method (this process's share
    of the digits test set in a multi-process run)."""
    ann, _ = load_checkpoint(model_dir)
    loader = evaluation_loader(load_dataset("digits", "test"), batch_size)
    if reports is not None:
        labels = torch.cat([y for _, y in loader]).tolist()
        Path(reports, f"rank{distributed.rank()}.json").write_text(json.dumps(labels))
    results = {}
    for name, params in METHODS.items():
        result = evaluate(convert(ann, name, **params), loader, STEPS, ann=ann)
        results[name] = {
            "snn": result.snn_accuracy, "ann": result.ann_accuracy, "n": result.n_samples,
            "sops": {t: result.operations.per_T[t]["snn_sops"] for t in STEPS},
        }
    return results


def _evaluate_in_process_group(model_dir: str, batch_size: int, reports: str) -> dict:
    with distributed.process_group("cpu"):
        return _evaluate_all(model_dir, batch_size, reports)


def test_distributed_evaluation_gives_exactly_the_one_process_counts(digits_checkpoint,
                                                                      tmp_path):
    one = _evaluate_all(str(digits_checkpoint), 50)
    two = distributed.launch(2, _evaluate_in_process_group, str(digits_checkpoint), 50,
                             str(tmp_path))
    test = load_dataset("digits", "test")
    for name in METHODS:
        assert two[name]["n"] == one[name]["n"] == len(test)
        # accuracies are count / n: equal floats iff equal counts
        assert two[name]["snn"] == one[name]["snn"], name
        assert two[name]["ann"] == one[name]["ann"]
        for t in STEPS:
            assert two[name]["sops"][t] == pytest.approx(one[name]["sops"][t], rel=1e-9)
    assert len(set(one["qcfs"]["snn"].values())) > 1  # accuracy changes with T: a real check
    # the shares: disjoint, in order, whole batches of 50 (8 batches → 4 each), no padding
    shares = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [len(s) for s in shares] == [200, len(test) - 200]
    assert shares[0] + shares[1] == test.labels.tolist()


def _cli_in_process_group(argv: list[str], reports: str) -> int:
    """`spikebridge ARGV` in one rank (as under torchrun), recording result files it writes."""
    import spikebridge.reporting as reporting

    written: list[str] = []
    for name in ("write_json", "write_csv", "plot_accuracy"):
        original = getattr(reporting, name)

        def recording(*args, _original=original, **kwargs):
            written.append(next(Path(a).name for a in args if isinstance(a, str | Path)))
            return _original(*args, **kwargs)

        setattr(reporting, name, recording)
    code = main(argv)  # joins and leaves the process group: ask the environment for the rank
    Path(reports, f"rank{os.environ['RANK']}.json").write_text(json.dumps(written))
    return code


def test_cli_evaluate_and_compare_write_only_on_rank_0(digits_checkpoint, tmp_path, capsys):
    common = ["--model", str(digits_checkpoint), "--T", "1,2,4", "--batch-size", "60",
              "--quiet", "--no-energy"]
    assert main(["evaluate", *common, "--method", "cos", "--rho", "2",
                 "--json", str(tmp_path / "one.json")]) == 0
    reports = tmp_path / "reports"
    reports.mkdir()
    argv = ["compare", *common, "--methods", "qcfs,cos", "--rho", "2",
            "--out", str(tmp_path / "compare")]
    assert distributed.launch(2, _cli_in_process_group, argv, str(reports)) == 0
    written = {r: json.loads((reports / f"rank{r}.json").read_text()) for r in (0, 1)}
    assert written == {0: ["results.json", "results.csv", "accuracy_vs_T.png"], 1: []}
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "compare" / "results.json").read_text())["results"]
    cos = next(record for record in two if record["method"] == "cos")
    assert cos["snn_accuracy"] == one["snn_accuracy"]
    assert cos["n_samples"] == one["n_samples"]


# --------------------------------------------------------------------------------------------
# failures: raised where the run was started, with the failing rank's own message


def _fail(where: str) -> None:
    with distributed.process_group("cpu"):
        if where == "rank 0 opening the output":
            distributed.on_main_process(lambda: (_ for _ in ()).throw(
                CheckpointError("cannot write /x: read-only")))
        elif distributed.rank() == 1:
            raise ValueError("bad data on rank 1")


def test_a_failing_rank_is_reported_not_hung():
    with pytest.raises(CheckpointError, match="read-only") as info:
        distributed.launch(2, _fail, "rank 0 opening the output")
    assert "raised in rank 0" in "".join(getattr(info.value, "__notes__", []))
    with pytest.raises(ValueError, match="bad data on rank 1"):
        distributed.launch(2, _fail, "rank 1")


def test_clear_errors_for_bad_process_settings(capsys, tmp_path):
    assert main(["train", "--nproc", "0", "--dataset", "digits", "--out",
                 str(tmp_path / "m")]) == 2
    assert "--nproc must be an integer >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="fp16 would need a gradient scaler"):
        TrainConfig(amp="fp16")
    with pytest.raises(SystemExit):
        main(["train", "--amp", "fp16", "--out", str(tmp_path / "m")])
    error = capsys.readouterr().err
    assert "invalid choice" in error and "fp16" in error
    with pytest.raises(distributed.DistributedError, match="--nproc must be"):
        distributed.launch(0, print)


# --------------------------------------------------------------------------------------------
# the per-process loaders, without processes: rank and world size faked


@pytest.fixture
def as_rank(monkeypatch):
    def become(rank: int, world: int) -> None:
        monkeypatch.setattr(distributed, "rank", lambda: rank)
        monkeypatch.setattr(distributed, "world_size", lambda: world)
    return become


def test_evaluation_shares_are_whole_batches_of_the_one_process_run(as_rank):
    test = load_dataset("digits", "test")  # 360 images: 8 batches of 50, the last one of 10
    single = list(BatchLoader(test, 50))
    for world in (2, 3, 8):
        batches = []
        for rank in range(world):
            as_rank(rank, world)
            batches += list(evaluation_loader(test, 50))
        assert len(batches) == len(single)
        for (x, y), (x1, y1) in zip(batches, single, strict=True):
            assert torch.equal(x, x1) and torch.equal(y, y1)
    as_rank(0, 9)
    with pytest.raises(ValueError, match=r"9 processes share 360 test images in 8 batch\(es\) "
                       r"of 50.*--batch-size 40 or less"):
        evaluation_loader(test, 50)
    as_rank(0, 400)
    with pytest.raises(ValueError, match="use at most 360 processes"):
        evaluation_loader(test, 50)
    assert len(evaluation_loader(test, 50, shard=False)) == 8  # calibration: everything


def test_training_shares_make_up_the_one_process_batch(as_rank):
    train_set = load_dataset("digits", "train")
    single = BatchLoader(train_set, 64, shuffle=True, augment=True, seed=5, drop_last=True)
    single.set_epoch(2)
    expected = list(single)
    shares = []
    for rank in (0, 1):
        as_rank(rank, 2)
        loader = training_loader(train_set, 64, seed=5, augment=True)
        assert isinstance(loader, RankShare) and loader.batch_size == 32
        loader.set_epoch(2)
        shares.append(list(loader))
    for (x, y), (x0, y0), (x1, y1) in zip(expected, *shares, strict=True):
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)
    as_rank(0, 3)
    with pytest.raises(ValueError, match="global batch size 64 does not split evenly over 3"):
        training_loader(train_set, 64)


def test_streamed_shares_hold_the_one_process_batches():
    """DistributedSampler over a streamed set: the k-th per-rank batches of R ranks together are
    the k-th one-process batch of R times the size (same order from the same seed)."""

    class Sized:
        def __len__(self) -> int:
            return 103

    for drop_last in (True, False):
        sampler = SeededSampler(103, shuffle=True, seed=7)
        sampler.set_epoch(4)
        order = list(sampler)
        shares = []
        for rank in range(3):
            share = _SeededDistributedSampler(Sized(), num_replicas=3, rank=rank, shuffle=True,
                                              seed=7, drop_last=drop_last)
            share.set_epoch(4)
            shares.append(list(share))
        per_rank = 5  # global batch 15
        for k in range(len(order) // 15):  # every complete global batch
            together = sorted(p for s in shares for p in s[k * per_rank:(k + 1) * per_rank])
            assert together == sorted(order[k * 15:(k + 1) * 15])
        covered = {i for s in shares for i, _ in s}
        assert len(covered) == (102 if drop_last else 103)


# --------------------------------------------------------------------------------------------
# streamed data (image folders, ImageNet's layout) through train and evaluate



class _Streamed(nn.Module):
    """S×S RGB → one stride-4 conv, QCFS, average over the (S/4)² map, linear."""

    def __init__(self, num_classes: int, in_channels: int, activation) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, 4, 4, stride=4), activation(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)




def _image_tree(root: Path) -> Path:
    """train/ and val/ with a red and a blue class of small JPEGs."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 8), ("val", 3)):
        for name, colour in (("blue", (20, 30, 200)), ("red", (200, 30, 20))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                noise = torch.randint(-20, 21, (3,), generator=generator).tolist()
                pixel = tuple(max(0, min(255, c + d)) for c, d in zip(colour, noise, strict=True))
                Image.new("RGB", (40 + i, 30), pixel).save(folder / f"{i}.jpg", quality=90)
    return root


def test_streamed_dataset_trains_and_evaluates(tmp_path, capsys, as_rank):
    data = _image_tree(tmp_path / "images")
    cfg = TrainConfig(architecture=STREAMED_MODEL, dataset="imagefolder", epochs=1,
                      batch_size=4, lr=0.05)
    config = train(cfg, tmp_path / "m", data_dir=data, progress=False, log=lambda _m: None)
    assert config["dataset"] == "imagefolder" and config["classes"] == ["blue", "red"]
    assert config["input_size"] == [224, 224] and config["history"][0]["train_loss"] > 0
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--data-dir", str(data),
                 "--T", "1,2", "--batch-size", "2", "--workers", "1", "--quiet", "--no-energy",
                 "--json", str(tmp_path / "e.json")]) == 0
    record = json.loads((tmp_path / "e.json").read_text())
    assert record["n_samples"] == 6  # val/ streamed, decoded image by image
    assert record["ann_accuracy"] == config["test_accuracy"]
    with pytest.raises(ValueError, match="--workers 2: digits is held in memory"):
        training_loader(load_dataset("digits", "test"), 8, workers=2)
    with pytest.raises(ValueError, match="--workers must be an integer >= 0"):
        evaluation_loader(load_streaming_dataset("imagefolder", "val", data), 2,
                          workers=-1)
    # two processes' shares of the streamed test set: the one-process batches, each once
    val = load_streaming_dataset("imagefolder", "val", data, image_size=32)
    single = list(make_loader(val, 2))
    shares = []
    for rank in (0, 1):
        as_rank(rank, 2)
        shares += list(evaluation_loader(val, 2, workers=1))
    assert len(shares) == len(single) == 3
    for (x, y), (x1, y1) in zip(shares, single, strict=True):
        assert torch.equal(x, x1) and torch.equal(y, y1)


def test_streamed_training_at_a_chosen_image_size(tmp_path):
    data = _image_tree(tmp_path / "images")
    cfg = TrainConfig(architecture=STREAMED_MODEL, dataset="imagefolder", epochs=1,
                      batch_size=4, lr=0.05, image_size=32)
    config = train(cfg, tmp_path / "m", data_dir=data, progress=False, log=lambda _m: None)
    assert config["input_size"] == [32, 32] and config["training"]["image_size"] == 32
    assert load_checkpoint(tmp_path / "m")[0].input_shape == (3, 32, 32)
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--data-dir", str(data),
                 "--T", "1", "--batch-size", "2", "--quiet", "--no-energy"]) == 0
    with pytest.raises(ValueError, match="--image-size applies to streamed datasets"):
        train(TrainConfig(dataset="digits", epochs=1, image_size=32), tmp_path / "d",
              progress=False, log=lambda _m: None)


# --------------------------------------------------------------------------------------------
# bf16 autocast, and CUDA


def test_bf16_autocast_trains_and_changes_the_arithmetic(tmp_path):
    cfg = _config(epochs=1)
    float32 = train(cfg, tmp_path / "f32", progress=False, log=lambda _m: None)
    bf16 = train(_config(epochs=1, amp="bf16"), tmp_path / "bf16", progress=False,
                 log=lambda _m: None)
    assert bf16["training"]["amp"] == "bf16" and float32["training"]["amp"] is None
    assert math.isfinite(bf16["history"][-1]["train_loss"])
    a, _ = _weights(tmp_path / "f32")
    b, _ = _weights(tmp_path / "bf16")
    assert all(v.dtype == torch.float32 for v in b.values())  # weights stay float32
    difference = max(float((a[n] - b[n]).abs().max()) for n in a)
    assert 0 < difference < 0.1  # bf16 rounding changed the steps, not the training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_train_convert_and_evaluate_on_cuda(tmp_path):
    config = train(_config(epochs=1), tmp_path / "m", device="cuda", progress=False,
                   log=lambda _m: None)
    assert config["processes"] == 1
    ann, _ = load_checkpoint(tmp_path / "m", device="cuda")
    test = BatchLoader(load_dataset("digits", "test"), 100)
    cpu_ann, _ = load_checkpoint(tmp_path / "m")
    for method, params in METHODS.items():
        on_gpu = evaluate(convert(ann, method, **params), test, STEPS, ann=ann, device="cuda")
        on_cpu = evaluate(convert(cpu_ann, method, **params), test, STEPS, ann=cpu_ann)
        # different float kernels: a spike may flip for an image or two, not more
        for t in STEPS:
            assert abs(on_gpu.snn_accuracy[t] - on_cpu.snn_accuracy[t]) <= 2 / len(test.dataset)
