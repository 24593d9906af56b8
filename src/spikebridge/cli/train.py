"""``spikebridge train``: train an ANN (QCFS by default) into a checkpoint directory.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .arguments import (
    add_common,
    add_follow_links,
    add_own_model_options,
    add_process_options,
    batch_count,
    model_factory,
    positive_int,
)
from .runs import multi_process

#: train options a recipe sets -> TrainConfig field (None when not given on the command line)
_RECIPE_OPTIONS = {
    "model": "architecture", "dataset": "dataset", "activation": "activation",
    "epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "momentum": "momentum",
    "weight_decay": "weight_decay", "autoaugment": "autoaugment", "cutout": "cutout",
    "crop_padding": "crop_padding",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train an ANN with a spiking-friendly activation (QCFS by default)",
        description="Train an ANN (SGD + momentum, cosine schedule, weight decay) and write a "
        "checkpoint directory: model.safetensors + config.json + train_state.pt (for --resume), "
        "signed by manifest.json (SHA-256 of each) and committed as one atomic snapshot after "
        "every epoch (docs/reliability.md). An existing checkpoint is only continued "
        "(--resume) or replaced (--overwrite); the directory is locked while training runs.",
    )
    p.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    p.add_argument("--recipe", default=None,
                   help="train as a row of the COS paper (e.g. cifar100-vgg16; `spikebridge "
                   "info` lists them, docs/reproduce.md): architecture, dataset, L, epochs, lr, "
                   "weight decay, batch size and augmentation from the recipe; any option given "
                   "explicitly here (e.g. --epochs 1 --train-subset 256) overrides it")
    p.add_argument("--model", default=None, help="architecture (default fashion_cnn; "
                   "see `spikebridge info`)")
    p.add_argument("--dataset", default=None,
                   help="fashion-mnist (default), mnist, digits, cifar10, cifar100, "
                   "cifar100-coarse (`spikebridge info`; docs/data.md)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="directory with the data set's files: IDX for MNIST-style sets, the CIFAR "
                   "release, ImageNet / image-folder trees (default: $SPIKEBRIDGE_DATA_DIR, or "
                   "the Debian package's Fashion-MNIST)")
    add_follow_links(p)
    p.add_argument("--activation", default=None,
                   help="qcfs:L=4,theta=2 (default) | relu | clipped_relu:theta=2 | "
                   "slip:L=4,c=0.5,theta=2[,delta1=0,delta2=0.5,learn_c=1] | strelu:theta=2 "
                   "(a reconstruction, docs/methods.md §6) | "
                   "leaky_threshold:theta=2,alpha=0.1,neg_theta=0.5. With --model-factory: "
                   "relu (default: the model as it is) or qcfs:L=4 (to_qcfs rewrites its "
                   "ReLUs, θ from 256 training images; fine-tune with a small --lr, e.g. 1/10 "
                   "of the original, for a few --epochs)")
    p.add_argument("--epochs", type=int, default=None, help="default 10")
    p.add_argument("--batch-size", type=batch_count, default=None, help="default 128")
    p.add_argument("--lr", type=float, default=None, help="default 0.1")
    p.add_argument("--momentum", type=float, default=None, help="default 0.9")
    p.add_argument("--weight-decay", type=float, default=None, help="default 5e-4")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true",
                   help="no augmentation at all (random crop / flip, AutoAugment, Cutout)")
    p.add_argument("--autoaugment", action=argparse.BooleanOptionalAction, default=None,
                   help="AutoAugment, CIFAR-10 policy (default off)")
    p.add_argument("--cutout", type=int, default=None,
                   help="Cutout square side in pixels (default 0 = off; CIFAR recipes 16 / 8)")
    p.add_argument("--crop-padding", type=int, default=None,
                   help="zero padding of the random crop (default: the dataset's, "
                   "`spikebridge info`: 2, or 4 for CIFAR)")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    p.add_argument("--train-subset", type=int, default=None,
                   help="train on the first N samples of a fixed shuffle (quick runs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    p.add_argument("--no-channels-last", action="store_true",
                   help="keep NCHW memory format (channels_last is faster on CPU)")
    p.add_argument("--resume", action="store_true", help="continue from the last finished epoch")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoint already in --out (kept until the first new "
                   "epoch is committed)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="with --resume: accept a checkpoint without (matching) SHA-256 hashes "
                   "(also: SPIKEBRIDGE_ALLOW_UNVERIFIED=1)")
    p.add_argument("--image-size", type=positive_int, default=None,
                   help="streamed datasets (imagenet, imagefolder): side of the square training "
                   "crop and evaluation image (default 224)")
    p.add_argument("--amp", choices=("bf16",), default=None,
                   help="mixed precision: bfloat16 autocast for forward and loss (weights and "
                   "optimizer stay float32; default off)")
    add_own_model_options(
        p, dataset=False,
        weights="weights to start from: a .safetensors file or a state dict saved with "
        "torch.save (a dict with a 'state_dict' or 'model' entry works too; read with "
        "weights_only=True, never unpickled). With --model-factory the weights of the model the "
        "factory builds (e.g. your ReLU network's), loaded before --activation qcfs rewrites it")
    p.add_argument("--maxpool", choices=("keep", "avg"), default=None,
                   help="with --model-factory and --activation qcfs:L=N: keep max-pooling "
                   "(default; it converts to a spiking max-pool) or swap it for average pooling "
                   "of the same window (converts exactly, costs some accuracy to fine-tune back)")
    add_process_options(p)
    add_common(p)
    p.set_defaults(func=run)


def _factory_activation(text: str | None):
    """The activation a factory model is trained with: as it is (relu, the default) or
    rewritten with QCFS; θ is not an option (to_qcfs starts it from the data)."""
    from ..activations import ActivationSpec

    if text is None:
        return ActivationSpec("relu")
    spec = ActivationSpec.parse(text)  # a kind other than relu / qcfs: TrainConfig refuses it
    options = text.partition(":")[2].split(",")
    if spec.kind == "qcfs" and any(o.partition("=")[0].strip().lower() == "theta"
                                   for o in options):
        raise ValueError(f"--activation {text}: θ of a --model-factory model is not set by hand; "
                         "to_qcfs starts every θ at the 99.9th percentile of that activation's "
                         "outputs on 256 training images (give qcfs:L=N only)")
    return spec


@multi_process
def run(args: argparse.Namespace) -> int:
    from ..activations import ActivationSpec
    from ..train import TrainConfig, train

    # options a recipe sets: given explicitly they override it; absent, the defaults apply
    chosen = {key: getattr(args, option) for option, key in _RECIPE_OPTIONS.items()
              if getattr(args, option) is not None}
    factory = model_factory(args)
    if factory is not None:
        given = [flag for flag, value in (("--model", args.model), ("--recipe", args.recipe))
                 if value is not None]
        if given:
            raise ValueError(f"--model-factory and {', '.join(given)} both name the model to "
                             "train; give one")
        chosen.update(activation=_factory_activation(args.activation),
                      model_factory=factory.to_dict(), maxpool=args.maxpool)
    elif args.maxpool is not None:
        raise ValueError("--maxpool applies to --model-factory with --activation qcfs:L=N (the "
                         "QCFS rewrite of your model); spikebridge's own architectures have "
                         "their pooling built in")
    elif "activation" in chosen:
        chosen["activation"] = ActivationSpec.parse(chosen["activation"])
    if args.no_augment:
        given = [flag for flag, key in (("--autoaugment", "autoaugment"), ("--cutout", "cutout"),
                                        ("--crop-padding", "crop_padding"))
                 if chosen.get(key)]
        if given or args.no_flip:
            raise ValueError(f"{', '.join(given + ['--no-flip'] * args.no_flip)} set(s) "
                             "augmentation, which --no-augment turns off; drop one of them")
        chosen.update(augment=False, autoaugment=False, cutout=0)
    if args.no_flip:
        chosen["horizontal_flip"] = False
    common = dict(seed=args.seed, train_subset=args.train_subset,
                  channels_last=not args.no_channels_last, compile=args.compile, amp=args.amp,
                  image_size=args.image_size)
    if args.recipe is not None:
        from ..recipes import load_recipe

        cfg = load_recipe(args.recipe).train_config(**common, **chosen)
    else:
        cfg = TrainConfig(**{"architecture": "fashion_cnn", "dataset": "fashion-mnist",
                             **common, **chosen})
    command = "spikebridge " + shlex.join(sys.argv[1:]) if sys.argv[1:] else None
    config = train(cfg, args.out, data_dir=args.data_dir, resume=args.resume,
                   overwrite=args.overwrite, allow_unverified=args.allow_unverified or None,
                   progress=not args.quiet, command=command, device=args.device,
                   workers=args.workers, init_weights=args.init_weights)
    print(f"wrote {args.out} (test accuracy {config['test_accuracy']:.2%})")
    return 0
