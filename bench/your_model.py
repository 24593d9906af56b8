"""The worked example of docs/your-model.md, end to end on Fashion-MNIST: a user-written ReLU
CNN (BatchNorm, max-pooling, a residual block, ``F.relu``, ``x.mean`` pooling) trained as ReLU,
then ``to_qcfs`` + fine-tuning by both max-pooling routes (``maxpool="keep"``: the SNN gets
spiking max-pools; ``maxpool="avg"``: average pooling before fine-tuning), then QCFS and COS at
T = 1, 2, 4, 8 beside both ANNs.

    python bench/your_model.py --epochs 3 --finetune-epochs 4 --limit 2000 \\
        --out bench/results/your_model.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import spikebridge as sb
from spikebridge.data import BatchLoader, load_dataset


class UserNet(nn.Module):
    """What a user brings: nothing spikebridge-specific."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.conv2, self.bn2 = nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.conv3, self.bn3 = nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.conv4, self.bn4 = nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        y = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(y)) + x)  # residual block
        x = self.pool(F.relu(self.bn4(self.conv4(x))))
        return self.fc(x.mean((2, 3)))  # global average pooling, as users write it


def fit(model: nn.Module, train, epochs: int, lr: float) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps = epochs * len(train)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for _ in range(epochs):
        for x, y in train:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            schedule.step()
    model.eval()


def accuracy(model: nn.Module, test) -> float:
    with torch.inference_mode():
        correct = sum(int((model(x).argmax(-1) == y).sum()) for x, y in test)
    return correct / sum(len(y) for _, y in test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=4)
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--routes", default="keep,avg", help="max-pooling routes of to_qcfs")
    parser.add_argument("--out", type=Path, default=Path("bench/results/your_model.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    train_set = load_dataset("fashion-mnist", "train")
    test = list(BatchLoader(load_dataset("fashion-mnist", "test").subset(args.limit, seed=0),
                            250))
    train = BatchLoader(train_set, 128, shuffle=True, seed=0)
    start = time.perf_counter()
    relu = UserNet()
    fit(relu, train, args.epochs, 0.05)
    relu_accuracy = accuracy(relu, test)
    calibration = [(x, None) for x, _ in BatchLoader(train_set.subset(512, seed=1), 128)]
    results = {"relu_ann": relu_accuracy, "routes": {}}
    for route in args.routes.split(","):
        qcfs = sb.to_qcfs(relu, 4, data=calibration, maxpool=route)
        before = accuracy(qcfs.eval(), test)
        fit(qcfs, train, args.finetune_epochs, 0.005)
        ann = accuracy(qcfs, test)
        row = {"qcfs_ann_before_finetune": before, "qcfs_ann": ann}
        for method in ("qcfs", "cos"):
            snn = sb.convert(qcfs, method, input_shape=(1, 28, 28))
            result = sb.evaluate(snn, test, [1, 2, 4, 8], count_operations=False)
            row[method] = {t: result.snn_accuracy[t] for t in (1, 2, 4, 8)}
        results["routes"][route] = row
        print(route, json.dumps(row))
    results["seconds"] = round(time.perf_counter() - start, 1)
    results["command"] = (f"python bench/your_model.py --epochs {args.epochs} --finetune-epochs "
                          f"{args.finetune_epochs} --limit {args.limit} --routes {args.routes}")
    print("ReLU ANN", relu_accuracy)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
