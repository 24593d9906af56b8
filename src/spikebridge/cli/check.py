"""``spikebridge check``: does a model convert? Every problem, listed from one trace.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from .arguments import add_own_model_options, add_trust_factory, own_model_conflicts


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", help="list everything in a model that will not convert (exit 0: it converts)",
        description="Trace a model once and list every node the converter cannot turn into a "
        "spiking network — node, op, why and what to do — all at once "
        "(spikebridge.check_convertible). Exit code 0 when it converts, 2 when it does not. "
        "Nothing is written.",
    )
    p.add_argument("--model", type=Path, default=None,
                   help="a checkpoint directory from `spikebridge train` (instead of "
                   "--model-factory)")
    add_own_model_options(
        p, dataset=False,
        weights="also load these weights into the factory's model (a .safetensors file or a "
        "torch.save state dict): every key and shape must fit")
    p.add_argument("--allow-unverified", action="store_true",
                   help="with --model: read a checkpoint without (or failing) its SHA-256 "
                   "manifest check")
    add_trust_factory(p)
    p.add_argument("--debug", action="store_true",
                   help="on failure, show the full Python traceback instead of one line")
    p.set_defaults(func=run)


def _activation_kinds(model) -> Counter:  # noqa: ANN001 - an nn.Module
    """How many activations of each kind (relu, qcfs, ...) the converter finds."""
    from ..convert import find_activation_sites
    from ..tracing import trace

    return Counter(site.kind for _, site in find_activation_sites(trace(model)))


def run(args: argparse.Namespace) -> int:
    import copy

    from ..checkpoint import load_checkpoint
    from ..convert import check_convertible
    from ..models.weights_file import load_weights

    factory = own_model_conflicts(args)
    if factory is None and args.model is None:
        raise ValueError("name the model to check: --model-factory MODULE:FUNCTION (your own "
                         "model), or --model DIR (a checkpoint)")
    if factory is not None:
        model, name = factory.build(), factory.describe()
        if args.init_weights is not None:
            load_weights(model, args.init_weights, what=f"the model of {name}")
    else:
        model, _ = load_checkpoint(args.model, allow_unverified=args.allow_unverified or None,
                                   trust_factory=args.trust_factory)
        name = str(args.model)
    problems = check_convertible(model)
    if not problems:
        kinds = _activation_kinds(copy.deepcopy(model).eval())
        listed = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
        print(f"{name}: converts (activations: {listed})")
        if "relu" in kinds and factory is not None:
            print("  its plain ReLUs have no trained threshold: the ReLU methods (maxnorm, "
                  "robustnorm, threshold-balancing, rmp, opi, ecc) convert them as they are; for "
                  "qcfs / cos fine-tune a QCFS version first with `spikebridge train "
                  f"--model-factory {factory.target} --activation qcfs:L=4`")
        return 0
    print(f"{name}: {len(problems)} problem(s) stop its conversion:")
    for problem in problems:
        print(f"  - {problem.node} ({problem.op}): {problem.why}")
    print(f"spikebridge check: error: {name} does not convert: {len(problems)} problem(s), "
          "listed above (docs/your-model.md, \"What converts\")", file=sys.stderr)
    return 2
