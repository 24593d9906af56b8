"""ANN training loop (SGD + momentum, cosine schedule, weight decay; docs/methods.md §3.6).

Commits a checkpoint after every epoch: weights, ``config.json`` and the training state are one
snapshot published atomically (:class:`~spikebridge.checkpoint.CheckpointWriter`), so a run
killed at any instant leaves the previous or the new epoch, and ``--resume`` continues from
exactly the epoch the weights belong to, with the same shuffling and augmentation it would have
had. The output directory is checked and locked before any work; an existing checkpoint is only
continued (``resume=True``) or replaced (``overwrite=True``) on request.

In a multi-process run (torchrun, or ``spikebridge train --nproc N``; docs/distributed.md) the
model is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`: ``R`` processes take
``batch_size / R`` images of every global batch (:func:`spikebridge.data.pipeline.
training_loader`), their gradients are averaged, so a step equals the one-process step on the
same global batch. BatchNorm: on CUDA its layers become :class:`~torch.nn.SyncBatchNorm`
(statistics of the whole global batch, as in one process); on the CPU PyTorch has no
SyncBatchNorm, so each process normalises with the statistics of its own ``batch_size / R``
images. Only rank 0 writes the checkpoint. ``amp="bf16"`` runs forward and loss under bfloat16
autocast (weights, gradients and the optimizer stay float32).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import distributed
from ._version import __version__
from .activations import (
    QCFS,
    ActivationSpec,
    AsymmetricLeakyReLU,
    ClippedReLU,
    SlipReLU,
    SymmetricThresholdReLU,
)
from .checkpoint import CheckpointError, CheckpointWriter, LoadedCheckpoint, read_checkpoint
from .checkpoint_model import (
    QCFS_FIT_SAMPLES,
    check_factory_activation,
    factory_model,
    factory_record,
)
from .data.pipeline import (
    Dataset,
    evaluation_loader,
    is_streamed,
    open_dataset,
    training_loader,
)
from .data.registry import dataset_info
from .devices import resolve_device
from .models import create_model
from .models.factory import ModelFactory
from .models.weights_file import WeightsFile, load_weights

__all__ = ["AMP_MODES", "TrainConfig", "accuracy", "learned_thresholds", "train"]

AMP_MODES = ("bf16",)
"""Mixed-precision modes of ``TrainConfig.amp`` (None: float32 throughout)."""


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored in ``config.json``)."""

    architecture: str = "fashion_cnn"
    dataset: str = "fashion-mnist"
    activation: ActivationSpec = field(default_factory=ActivationSpec)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    augment: bool = True
    train_subset: int | None = None
    channels_last: bool = True
    compile: bool = False
    amp: str | None = None
    autoaugment: bool = False
    cutout: int = 0
    recipe: str | None = None
    image_size: int | None = None  # streamed datasets: square crop side (default 224)
    crop_padding: int | None = None  # in-memory datasets: random-crop padding (None: dataset's)
    horizontal_flip: bool = True  # in-memory datasets: random horizontal flip
    # a user's own model (``ModelFactory.to_dict()``: target, kwargs) instead of `architecture`,
    # which then names the factory; trained as it is (activation relu) or rewritten by to_qcfs
    # (activation qcfs, `maxpool` "keep" or "avg"; θ from a few training batches)
    model_factory: dict | None = None
    maxpool: str | None = None

    def __post_init__(self) -> None:
        if self.model_factory is not None:
            target = ModelFactory.from_dict(self.model_factory).target
            if self.architecture not in (target, "fashion_cnn"):  # fashion_cnn: the default
                raise ValueError(f"architecture {self.architecture!r} and model_factory "
                                 f"{target!r} name two models; give one")
            self.architecture = target
            check_factory_activation(self.activation, self.maxpool)
            if self.activation.kind == "qcfs" and self.maxpool is None:
                self.maxpool = "keep"  # to_qcfs's default: the converter's spiking max-pool
        elif self.maxpool is not None:
            raise ValueError("maxpool applies to a model from a model factory rewritten with "
                             "QCFS (--model-factory ... --activation qcfs:L=N)")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.cutout < 0:
            raise ValueError(f"cutout must be >= 0, got {self.cutout}")
        if self.crop_padding is not None and self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if not self.augment and (self.autoaugment or self.cutout):
            raise ValueError("AutoAugment and Cutout are augmentation, which --no-augment turns "
                             "off; drop one of them")
        if self.image_size is not None and not is_streamed(self.dataset):
            raise ValueError(f"--image-size applies to streamed datasets (imagenet, "
                             f"imagefolder); {self.dataset} is trained at the size of its images")
        if is_streamed(self.dataset) and (self.crop_padding or not self.horizontal_flip):
            raise ValueError(f"{self.dataset} is streamed and augmented per image (random "
                             "resized crop + flip); crop padding and the flip switch apply to "
                             "in-memory datasets")
        if not (math.isfinite(self.momentum) and 0.0 <= self.momentum < 1.0):
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0.0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got "
                             f"{self.weight_decay}")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {self.image_size}")
        if self.amp is not None and self.amp not in AMP_MODES:
            raise ValueError(
                f"--amp {self.amp} is not supported: only bf16 (bfloat16 autocast, float32's "
                "exponent range, so no loss scaling); fp16 would need a gradient scaler"
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["activation"] = self.activation.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The config a ``config.json`` ``training`` dict describes; fields it lacks (written
        before they existed, e.g. ``autoaugment``, ``cutout``) take their defaults.

        Raises:
            ValueError: the dict has a field TrainConfig does not know.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training setting(s) {', '.join(unknown)}")
        values = dict(data)
        if isinstance(values.get("activation"), dict):
            values["activation"] = ActivationSpec.from_dict(values["activation"])
        return cls(**values)


def _saved_training(training: Any) -> dict[str, Any] | None:
    """A checkpoint's ``training`` settings with the defaults of fields added since it was
    written, so that older checkpoints still resume; ``None`` if unreadable."""
    try:
        return TrainConfig.from_dict(training).to_dict()
    except (TypeError, ValueError):
        return None


def learned_thresholds(model: nn.Module) -> dict[str, float]:
    """θ of every activation with a trained threshold (QCFS, clipped ReLU, SlipReLU, stReLU,
    asymmetric LeakyReLU), by qualified module name."""
    kinds = (QCFS, ClippedReLU, SlipReLU, SymmetricThresholdReLU, AsymmetricLeakyReLU)
    return {
        name: float(module.theta.detach())
        for name, module in model.named_modules()
        if isinstance(module, kinds)
    }


def accuracy(
    model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
    channels_last: bool = False,
) -> float:
    """Top-1 accuracy of ``model`` (eval mode) over ``loader``, as a fraction.

    In a multi-process run ``loader`` is this process's share and the counts are summed over
    all processes (every process gets the accuracy over the whole set).
    """
    model.eval()
    correct = n = 0
    with torch.inference_mode():
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            correct += int((model(x).argmax(dim=-1).cpu() == y).sum())
            n += int(y.shape[0])
    correct, n = distributed.all_reduce_sum(torch.tensor([correct, n])).tolist()
    return correct / max(n, 1)


def _checkpoint_config(
    cfg: TrainConfig, model: nn.Module, train: Dataset, epochs_done: int,
    history: list[dict], command: str | None, test_fingerprint: str | None = None,
    init_weights: dict | None = None,
) -> dict[str, Any]:
    kwargs = {"input_size": list(train.input_size)} if cfg.architecture == "fashion_cnn" else {}
    own = {} if cfg.model_factory is None else {"model_factory": factory_record(
        ModelFactory.from_dict(cfg.model_factory), cfg.activation, cfg.maxpool)}
    weights = {} if init_weights is None else {"init_weights": init_weights}
    return {
        "architecture": cfg.architecture,
        "num_classes": train.num_classes,
        "in_channels": train.in_channels,
        "model_kwargs": kwargs,
        **own,
        **weights,
        "activation": cfg.activation.to_dict(),
        "thresholds": learned_thresholds(model),
        "dataset": train.name,
        "classes": list(train.classes),
        "normalization": {"mean": list(train.mean), "std": list(train.std)},
        "input_size": list(train.input_size),
        # SHA-256 of the test images and labels this model was evaluated on; `evaluate` refuses
        # other data under the same name (docs/reliability.md)
        "test_fingerprint": test_fingerprint,
        "seed": cfg.seed,
        "training": cfg.to_dict(),
        "epochs_completed": epochs_done,
        "test_accuracy": history[-1]["test_accuracy"] if history else None,
        "history": history,
        "command": command,
        "processes": distributed.world_size(),
        "spikebridge_version": __version__,
    }


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    allow_unverified: bool | None = None,
    progress: bool = True,
    command: str | None = None,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
    stop_after_epoch: int | None = None,
    workers: int = 0,
    init_weights: str | Path | None = None,
) -> dict[str, Any]:
    """Train ``cfg.architecture`` (or ``cfg.model_factory``'s model) on ``cfg.dataset``; return
    the final ``config.json`` dict.

    ``stop_after_epoch`` ends the run early (as a killed run would) while keeping the schedule
    of ``cfg.epochs``; ``resume=True`` continues it. An ``out_dir`` that already holds a
    checkpoint needs ``resume=True`` or ``overwrite=True``; it is checked and locked before any
    data is loaded (:class:`~spikebridge.checkpoint.CheckpointWriter`). ``allow_unverified``
    lets ``resume`` read a checkpoint without (matching) hashes. ``workers`` decoding processes
    feed streamed datasets (ImageNet, image folders). ``init_weights``: a weights file
    (:mod:`spikebridge.models.weights_file`) loaded into the new model before training — for a
    factory model rewritten with QCFS, the model as the factory builds it (its ReLU weights),
    before the rewrite; its path and SHA-256 are recorded in ``config.json``. A resumed run
    continues from its checkpoint's weights, so ``init_weights`` with ``resume`` is refused.

    Called in every process of an initialised ``torch.distributed`` group it trains with
    DistributedDataParallel (module docstring); only rank 0 locks ``out_dir``, writes it and
    calls ``log``, and every rank stops if rank 0 cannot open ``out_dir``.
    """
    out_dir = Path(out_dir)
    if init_weights is not None and resume:
        raise ValueError("--init-weights and --resume exclude each other: a resumed run "
                         f"continues from the weights of its checkpoint in {out_dir}")
    device = resolve_device(device)
    if device.type == "cuda" and device.index is None:  # DDP needs the index
        device = torch.device("cuda", torch.cuda.current_device())
    main = distributed.is_main_process()
    if not main:
        log, progress = (lambda _message: None), False
    created = not os.path.lexists(out_dir)
    writer = distributed.on_main_process(
        lambda: CheckpointWriter(out_dir, resume=resume, overwrite=overwrite))
    try:
        with writer if writer is not None else contextlib.nullcontext():
            saved = None
            if resume:
                saved = read_checkpoint(out_dir, train_state=True,
                                        allow_unverified=allow_unverified)
                _check_resumable(saved, cfg, out_dir, log)
                if saved.train_state is None:
                    raise CheckpointError(f"cannot resume {out_dir}: its checkpoint has no "
                                          "training state (it was not written by `spikebridge "
                                          "train`)")
            return _train(cfg, out_dir, writer, saved, data_dir=data_dir, progress=progress,
                          command=command, device=device, log=log,
                          stop_after_epoch=stop_after_epoch, workers=workers,
                          init_weights=init_weights)
    except BaseException:
        if created and writer is not None:  # refused before a commit (a model factory that
            with contextlib.suppress(OSError):  # fails, weights that do not fit): leave nothing
                out_dir.rmdir()  # only while still empty: a committed epoch stays
        raise


def _initial_model(cfg: TrainConfig, train_set: Dataset, init_weights: str | Path | None, *,
                   resumed: bool, workers: int) -> tuple[nn.Module, WeightsFile | None]:
    """The model to train: ``cfg.architecture`` from the registry, or ``cfg.model_factory``'s
    model (checked on the training images' size) rewritten with QCFS for a ``qcfs`` activation,
    θ starting at the 99.9th percentile of each activation's outputs on QCFS_FIT_SAMPLES
    training images (a resumed run loads its trained θ instead); ``init_weights`` loaded first.
    """
    if cfg.model_factory is None:
        kwargs = ({"input_size": train_set.input_size} if cfg.architecture == "fashion_cnn"
                  else {})
        model = create_model(cfg.architecture, num_classes=train_set.num_classes,
                             in_channels=train_set.in_channels, activation=cfg.activation,
                             **kwargs)
        weights = None if init_weights is None else load_weights(
            model, init_weights, what=f"{cfg.architecture} with activation {cfg.activation.kind}")
        return model, weights
    data = None
    if cfg.activation.kind == "qcfs" and not resumed:
        fit = train_set.subset(min(QCFS_FIT_SAMPLES, len(train_set)), seed=cfg.seed)
        data = evaluation_loader(fit, min(cfg.batch_size, 128), workers=workers, shard=False)
    return factory_model(ModelFactory.from_dict(cfg.model_factory), cfg.activation, cfg.maxpool,
                         data=data, init_weights=init_weights,
                         input_shape=(train_set.in_channels, *train_set.input_size),
                         num_classes=train_set.num_classes)


def _check_resumable(saved: LoadedCheckpoint, cfg: TrainConfig, out_dir: Path,
                     log: Callable[[str], None]) -> None:
    """Resuming needs the settings the checkpoint was trained with; only the epoch count may
    grow, which extends the run: the cosine schedule is then recomputed over the new count and
    continues from the step it reached (so the learning rate rises again from where the old
    schedule left it, as in a warm restart — not the run a fresh ``--epochs N`` would give)."""
    before = _saved_training(saved.config.get("training"))
    now = cfg.to_dict()
    if before is None or {**before, "epochs": now["epochs"]} != now:
        changed = sorted(k for k in now if before is None or before.get(k) != now[k])
        raise CheckpointError(
            f"cannot resume {out_dir}: it was trained with different settings (differing: "
            f"{', '.join(changed)}; only --epochs may change, to extend the run); start a new "
            "directory or use the same options"
        )
    done = int(saved.epoch or 0)
    if cfg.epochs < done:
        raise CheckpointError(f"cannot resume {out_dir} with --epochs {cfg.epochs}: it has "
                              f"already completed {done} epochs")
    if cfg.epochs != before["epochs"]:
        log(f"extending {out_dir} from {before['epochs']} to {cfg.epochs} epochs (the cosine "
            f"learning-rate schedule is recomputed over {cfg.epochs} epochs from the step it "
            "reached)")


def _train(
    cfg: TrainConfig,
    out_dir: Path,
    writer: CheckpointWriter | None,
    saved: LoadedCheckpoint | None,
    *,
    data_dir: str | Path | None,
    progress: bool,
    command: str | None,
    device: torch.device,
    log: Callable[[str], None],
    stop_after_epoch: int | None,
    workers: int,
    init_weights: str | Path | None = None,
) -> dict[str, Any]:
    world = distributed.world_size()
    padding = (dataset_info(cfg.dataset).crop_padding if cfg.crop_padding is None
               else cfg.crop_padding)
    size = None if cfg.image_size is None else (cfg.image_size, cfg.image_size)
    train_set = open_dataset(cfg.dataset, "train", data_dir, augment=cfg.augment,
                             input_size=size)
    train_set = train_set.subset(cfg.train_subset, seed=cfg.seed)
    test_set = open_dataset(cfg.dataset, "test", data_dir, input_size=train_set.input_size,
                            mean=train_set.mean, std=train_set.std)
    torch.manual_seed(cfg.seed)
    model, weights = _initial_model(cfg, train_set, init_weights, resumed=saved is not None,
                                    workers=workers)
    initial = (weights.record() if weights is not None
               else None if saved is None else saved.config.get("init_weights"))
    loader = training_loader(train_set, cfg.batch_size, seed=cfg.seed, augment=cfg.augment,
                             workers=workers,
                             crop_padding=padding,
                             # only where a mirror keeps the label (the dataset's record says)
                             horizontal_flip=(cfg.horizontal_flip
                                              and dataset_info(cfg.dataset).horizontal_flip),
                             autoaugment=cfg.autoaugment, cutout=cfg.cutout, device=device)
    test_loader = evaluation_loader(test_set, 500, workers=workers, idle_processes=True)
    if len(loader) == 0:
        raise ValueError(
            f"the training set has {len(train_set)} samples, fewer than one batch of "
            f"{cfg.batch_size}; pass --batch-size {max(1, len(train_set))} or less (a recipe's "
            "batch size is meant for the full training set)"
        )
    start_epoch, history = 0, []
    if saved is not None:
        try:
            model.load_state_dict(saved.state_dict, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"cannot resume {out_dir}: its weights do not fit the "
                                  f"model: {exc}") from exc
        start_epoch, history = int(saved.epoch), list(saved.config.get("history", []))
        if start_epoch >= cfg.epochs:
            log(f"{out_dir} already finished {start_epoch} epochs; nothing to resume")
            return saved.config
        log(f"resuming {out_dir} after epoch {start_epoch}")
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device).to(memory_format=memory_format)
    if world > 1 and device.type == "cuda":  # statistics of the global batch, as one process
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # after the move: a resumed optimizer state follows its parameters onto the device
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * len(loader)
    def cosine(step: int) -> float:  # lr factor, annealed per iteration from 1 to 0
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    if saved is not None:
        optimizer.load_state_dict(saved.train_state["optimizer"])
        scheduler.load_state_dict(saved.train_state["scheduler"])
    trained: nn.Module = model
    if world > 1:
        trained = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(trained) if cfg.compile else trained
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")
    loss_fn = nn.CrossEntropyLoss()
    config: dict[str, Any] = {}
    last_epoch = cfg.epochs if stop_after_epoch is None else min(cfg.epochs, stop_after_epoch)
    for epoch in range(start_epoch, last_epoch):
        model.train()
        loader.set_epoch(epoch)
        # dropout masks: each process its own stream (one shared seed would repeat every mask
        # on all R processes); R > 1 therefore draws other masks than one process
        torch.manual_seed((cfg.seed * 1000 + epoch) * 7919 + distributed.rank())
        started, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        # iter() once, here: it starts epoch `epoch` (tqdm.auto would call iter() a second
        # time on a loader, silently moving to the next epoch's order)
        bar = tqdm(iter(loader), total=len(loader), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, leave=False)
        for x, y in bar:
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            with autocast:
                logits = forward(x)
                loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training diverged (loss {float(loss)}) in epoch {epoch + 1}; lower --lr"
                )
            seen += int(y.shape[0])
            loss_sum += float(loss.detach()) * int(y.shape[0])
            correct += int((logits.detach().argmax(dim=-1) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        # every process: the epoch's totals over all processes, and rank 0's BatchNorm running
        # statistics (the model rank 0 saves) for the test accuracy
        loss_sum, correct, seen = distributed.all_reduce_sum(
            torch.tensor([loss_sum, correct, seen], dtype=torch.float64)).tolist()
        distributed.broadcast_buffers(model)
        test_acc = accuracy(model, test_loader, device, cfg.channels_last)
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "test_accuracy": test_acc,
            "seconds": time.perf_counter() - started,
        }
        history.append(record)
        log(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {record['train_loss']:.4f}, "
            f"train {record['train_accuracy']:.2%}, test {test_acc:.2%} "
            f"({record['seconds']:.0f} s)"
        )
        config = _checkpoint_config(cfg, model, train_set, epoch + 1, history, command,
                                    getattr(test_set, "fingerprint", lambda: None)(), initial)
        if writer is not None:
            writer.commit(model, config, {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,
            }, epoch=epoch + 1)
    return config
