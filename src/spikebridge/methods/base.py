"""The recipe interface every conversion method implements (design.md: "a method is a recipe").

A recipe says how one ANN activation becomes a spiking neuron (threshold, initial potential,
reset, calibration). The graph rewrite in :mod:`spikebridge.convert` is the same for every
method; adding a method means adding one module in this package and registering it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from ..neurons import IFNeuron

__all__ = ["ActivationSite", "ConversionMethod"]


@dataclass(frozen=True)
class ActivationSite:
    """One activation found in the ANN graph.

    ``name``: qualified module name (``features.2``) or, for a functional call such as
    ``F.relu``, the graph node's name; ``kind``: ``"qcfs"`` | ``"clipped_relu"`` | ``"relu"``;
    ``threshold``: θ read from the activation (its trained clipping value), or given by the
    user, ``None`` when neither is known; ``shift``: the ANN's shift φ (QCFS), else ``None``;
    ``levels``: QCFS ``L`` (``None`` for the others).
    """

    name: str
    kind: str
    threshold: float | None
    shift: float | None = None
    levels: int | None = None
    module: nn.Module | None = None


class ConversionMethod(ABC):
    """Turns each :class:`ActivationSite` into an :class:`~spikebridge.neurons.IFNeuron`."""

    name: ClassVar[str]

    @abstractmethod
    def neuron(self, site: ActivationSite) -> IFNeuron:
        """The IF neuron that replaces ``site``."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The method's parameters, as plain data for result files."""

    def presimulation_steps(self) -> int:
        """Input frames a neuron reads before its real run (ρ·iterations for COS, else 0)."""
        return 0

    def needs_sequence_mode(self) -> bool:
        """Whether neurons must see their whole input sequence at once (calibrating methods)."""
        return False

    def total_steps(self, steps: int) -> int:
        """Time-steps the input is presented for a result labelled ``T = steps`` (§4.5)."""
        return self.presimulation_steps() + steps

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def require_threshold(site: ActivationSite, method: str) -> float:
    """θ of ``site``, or a clear error saying how to provide it."""
    if site.threshold is None:
        raise ValueError(
            f"activation {site.name!r} is a plain ReLU, which has no trained threshold; method "
            f"{method!r} maps each activation's threshold θ to the IF neuron's firing threshold. "
            "Train with QCFS or a clipped ReLU, or pass thresholds={'" + site.name + "': θ} "
            "(or one float for every ReLU) to convert()."
        )
    return site.threshold
