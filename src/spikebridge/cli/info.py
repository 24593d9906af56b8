"""``spikebridge info``: models, datasets, methods and recipes, from their registries.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="list models, datasets, methods and the shipped model")
    p.set_defaults(func=run)


def run(_args: argparse.Namespace) -> int:
    from .._version import __version__
    from ..methods import list_methods
    from ..models import list_models
    from ..shipped import SHIPPED_MODEL_DIR

    print(f"spikebridge {__version__}")
    print(f"models:   {', '.join(list_models())}")
    from ..data.registry import DATASETS

    print("datasets (docs/data.md):")
    for info in DATASETS.values():
        size = "x".join(map(str, info.image_size)) if info.image_size else "SxS (--image-size)"
        classes = (f"{info.num_classes} classes" if info.num_classes
                   else "classes from its folders")
        norm = (f"mean {', '.join(f'{m:g}' for m in info.mean)}" if info.mean
                else "mean/std of the training split")
        print(f"  {info.name:<16} {classes}, {info.channels}x{size}, {info.storage}, "
              f"{norm}")
        print(f"  {'':<16} train: {info.train_transform}; test: {info.test_transform}")
    from ..methods import METHODS

    print("methods (docs/methods.md):")
    for name in list_methods():
        method = METHODS[name]
        print(f"  {name:<20} {method.summary}")
        print(f"  {'':<20} converts: {' / '.join(method.source_kinds)} ANNs "
              f"(make one: {method.source_hint})")
    from ..recipes import list_recipes, load_recipe

    print("recipes (docs/reproduce.md; train --recipe NAME, reproduce --recipe NAME):")
    for name in list_recipes():
        recipe = load_recipe(name)
        print(f"  {name:<20} {recipe.title}: {recipe.summary()}")
    print(f"shipped model: {SHIPPED_MODEL_DIR}")
    return 0
