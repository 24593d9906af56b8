r"""The energy model: per-operation energies and the counting conventions (docs/methods.md §8.3).

:math:`E_{ANN} = E_{MAC}\cdot\#MAC`, :math:`E_{SNN} = E_{MAC}\cdot\#MAC_{analog} +
E_{AC}\cdot\#SOP`, with Horowitz's 45 nm defaults 4.6 pJ / 0.9 pJ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["AC_PJ_45NM", "FIRST_LAYER_CONVENTIONS", "MAC_PJ_45NM", "EnergyModel"]

#: Energy of a 32-bit floating-point multiply-accumulate at 45 nm, pJ (Horowitz, ISSCC 2014).
MAC_PJ_45NM = 4.6
#: Energy of a 32-bit floating-point add (accumulate) at 45 nm, pJ (Horowitz, ISSCC 2014).
AC_PJ_45NM = 0.9
#: How the analog first layer is charged: computed once per image, or at every presented frame.
FIRST_LAYER_CONVENTIONS = ("once", "every_step")


@dataclass(frozen=True)
class EnergyModel:
    """Per-operation energies (pJ) and the counting conventions (docs/methods.md §8).

    ``mac_pj``: one multiply-accumulate on analog values (ANN layers, the SNN's first layer);
    ``ac_pj``: one synaptic accumulate (a spike event reaching one target);
    ``first_layer``: ``"once"`` (the simulator's cached first-layer current) or
    ``"every_step"`` (recomputed at every presented frame, pre-simulation frames included);
    ``count_bias``: also charge one accumulate per biased neuron per step.
    """

    mac_pj: float = MAC_PJ_45NM
    ac_pj: float = AC_PJ_45NM
    first_layer: str = "once"
    count_bias: bool = False

    def __post_init__(self) -> None:
        for name in ("mac_pj", "ac_pj"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite energy >= 0 (pJ), got {value!r}")
        if self.first_layer not in FIRST_LAYER_CONVENTIONS:
            raise ValueError(
                f"first_layer must be one of {FIRST_LAYER_CONVENTIONS}, got {self.first_layer!r}"
            )

    def conventions(self) -> dict[str, Any]:
        """What the numbers of a report mean, as plain data for result files."""
        return {
            "mac_pj": self.mac_pj, "ac_pj": self.ac_pj,
            "energy_source": "Horowitz, ISSCC 2014, 45 nm, 32-bit float"
            if (self.mac_pj, self.ac_pj) == (MAC_PJ_45NM, AC_PJ_45NM) else "user-given",
            "first_layer": self.first_layer, "bias_in_energy": self.count_bias,
            "sops": "exact: spike events x fan-out (docs/methods.md §8.2)",
            "pooling": "folded into the next layer's fan-out; its own additions not counted",
            "not_counted": "neuron updates, constant current injections, memory access",
            "units": "per image (averaged over the evaluated samples)",
        }
