"""The interface every conversion method implements.

A method says how one ANN activation becomes a spiking neuron (threshold, initial potential,
reset, calibration). The graph rewrite in :mod:`spikebridge.convert` is the same for every
method; adding a method means adding one module in this package and registering it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import fx, nn

from ..neurons import IFNeuron

if TYPE_CHECKING:
    from ..calibration import CalibrationData
    from ..network import SpikingNetwork

__all__ = [
    "ActivationSite",
    "ConversionMethod",
    "Preparation",
    "WrongSourceModelError",
    "require_threshold",
]


class WrongSourceModelError(ValueError):
    """The ANN was trained with an activation this method cannot convert."""


@dataclass(frozen=True)
class ActivationSite:
    """One activation found in the ANN graph.

    ``name``: qualified module name (``features.2``) or, for a functional call such as
    ``F.relu``, the graph node's name; ``kind``: the activation's kind (``"qcfs"``,
    ``"clipped_relu"``, ``"relu"``, ``"slip"``, ``"strelu"``, ``"leaky_threshold"``);
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


@dataclass
class Preparation:
    """What a data-based method's :meth:`ConversionMethod.prepare` works from.

    ``ann``: the BatchNorm-folded ANN graph (before neurons replaced its activations);
    ``activation_nodes``: IF-neuron name → name of the ANN graph node it replaced; ``data``: the
    calibration images; ``device``: where to run them.
    """

    ann: fx.GraphModule
    activation_nodes: dict[str, str]
    data: CalibrationData | None
    device: torch.device


class ConversionMethod(ABC):
    """Turns each :class:`ActivationSite` into an :class:`~spikebridge.neurons.IFNeuron`.

    Class attributes every method sets: ``name`` (registry key), ``source_kinds`` (the ANN
    activation kinds it converts), ``source_hint`` (the ``spikebridge train`` command that makes
    such a model), ``summary`` (one line for ``--help``/docs).
    """

    name: ClassVar[str]
    source_kinds: ClassVar[tuple[str, ...]] = ("qcfs", "clipped_relu")
    source_hint: ClassVar[str] = "spikebridge train --activation qcfs:L=4 --out DIR"
    summary: ClassVar[str] = ""

    def check_source(self, sites: Sequence[ActivationSite]) -> None:
        """Raise :class:`WrongSourceModelError` if the ANN's activations are of the wrong kind.

        A plain ReLU given a threshold by the user (``convert(..., thresholds=...)``) counts as a
        clipped ReLU.
        """

        def kind(site: ActivationSite) -> str:
            given = site.kind == "relu" and site.threshold is not None
            return "clipped_relu" if given else site.kind

        wrong = sorted({kind(site) for site in sites if kind(site) not in self.source_kinds})
        if wrong:
            hint = ""
            if wrong == ["relu"] and "clipped_relu" in self.source_kinds:
                hint = (". A plain ReLU has no trained threshold: give your own model QCFS "
                        "activations with spikebridge.to_qcfs(model, levels=4, data=batches) "
                        "and fine-tune a few epochs (docs/your-model.md; CLI: spikebridge train "
                        "--model-factory pkg.module:function --init-weights FILE --activation "
                        "qcfs:L=4), or pass thresholds= to convert() (one θ, or {site name: "
                        "θ}), or use a method made for ReLU networks: maxnorm, robustnorm, "
                        "threshold-balancing, rmp, opi, ecc")
            raise WrongSourceModelError(
                f"method {self.name!r} converts ANNs trained with "
                f"{' / '.join(self.source_kinds)} activations, but this model uses "
                f"{', '.join(wrong)}. Train a source model for it with: {self.source_hint}{hint}"
            )

    def bn_epsilon(self) -> float | None:
        """ε used to fold BatchNorm (``None``: each BatchNorm's own, §7.5; 0: without ε)."""
        return None

    def needs_calibration_data(self) -> bool:
        """Whether :meth:`prepare` needs (training) data: data-based normalization (§7.3, §7.9)."""
        return False

    def needs_preparation(self) -> bool:
        """Whether :func:`~spikebridge.convert` must call :meth:`prepare` after the rewrite."""
        return self.needs_calibration_data()

    def prepare(self, snn: SpikingNetwork, preparation: Preparation) -> None:
        """Set data-dependent parameters after the graph rewrite (thresholds, weight scales).

        Called by :func:`~spikebridge.convert` when :meth:`needs_preparation` is true;
        ``preparation.data`` is ``None`` unless :meth:`needs_calibration_data` is. The default
        does nothing (methods without data-dependent parameters).
        """
        return None

    def horizon_dependent(self) -> bool:
        """Whether a neuron's dynamics depend on the run length T (ECC's TRE current ηθ/T).

        Such a method's accuracy at T needs its own run of exactly T steps.
        """
        return False

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
        """Time-steps the input is presented for a result labelled ``T = steps`` (§4.5):
        ``latency.presented`` in result records."""
        return self.presimulation_steps() + steps

    def frames_per_layer(self, steps: int) -> int:
        """Input frames every layer computes for a result at ``T = steps`` (docs/energy.md):
        ``T`` without calibration; COS overrides it (pre-simulation replays plus at least ρ
        real frames, which the next layer's calibration reads)."""
        return steps

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def require_threshold(site: ActivationSite, method: str) -> float:
    """θ of ``site``, or a clear error saying how to provide it."""
    if site.threshold is None:
        raise WrongSourceModelError(
            f"activation {site.name!r} is a plain ReLU, which has no trained threshold; method "
            f"{method!r} maps each activation's threshold θ to the IF neuron's firing threshold. "
            "Train a QCFS model (spikebridge train --activation qcfs:L=4 --out DIR), use a "
            "method made for ReLU networks (maxnorm, robustnorm, threshold-balancing, rmp, opi, "
            "ecc), or pass thresholds={'" + site.name + "': θ} (or one float for every ReLU) "
            "to convert()."
        )
    return site.threshold
