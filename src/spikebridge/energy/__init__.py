r"""Exact operation and energy accounting (docs/energy.md; conventions: docs/methods.md §8).

Three numbers, each exact for the network and input shape at hand:

* **ANN MACs** (:func:`ann_operations`, :mod:`.macs`): from the graph and the real input shape,
  per layer.
* **SNN synaptic operations** (:class:`OperationCounter`, :mod:`.counter`): counted from the
  spike events each IF neuron actually emits, each event costing its exact **fan-out**
  (:func:`network_fanout`, :mod:`.connectivity`): the number of accumulates it triggers in the
  layers it reaches before the next IF neurons or the output.
* **Energy** (:class:`EnergyModel`, :mod:`.model`): :math:`E_{ANN} = E_{MAC}\cdot\#MAC`,
  :math:`E_{SNN} = E_{MAC}\cdot\#MAC_{analog} + E_{AC}\cdot\#SOP` (§8.3), with Horowitz's 45 nm
  defaults 4.6 pJ / 0.9 pJ.

The first layer fed by the analog image runs in the time-invariant prefix
(:class:`~spikebridge.network.SpikingNetwork`): its MACs are counted once per image (what the
simulator computes, ``first_layer="once"``) or at every presented frame (``"every_step"``, what
hardware re-presenting the image does). A method's pre-simulation (COS, §4.5–4.6) is reported
through the method interface and charged as the SOPs of the replayed frames. Neuron updates
(add, compare, reset), the constant current injections (bias, first-layer current, ECC's TRE
current) and memory accesses are not counted; bias accumulates are reported (``bias_acs``) and
can be charged with ``EnergyModel(count_bias=True)``.

This package is an observer of the simulation engine: it imports the network and neurons, never
the layers above (evaluation, reporting, experiments). Result records, tables and plots of these
numbers are :mod:`spikebridge.reporting`'s.
"""

from __future__ import annotations

from ..deprecation import moved_names
from .connectivity import count_synaptic_operations, network_fanout, synaptic_fanout
from .counter import OperationCounter, OperationReport, ops_from_mapping, record_operations
from .macs import AnnCost, LayerCost, ann_operations
from .model import AC_PJ_45NM, FIRST_LAYER_CONVENTIONS, MAC_PJ_45NM, EnergyModel

__all__ = [
    "AC_PJ_45NM",
    "FIRST_LAYER_CONVENTIONS",
    "MAC_PJ_45NM",
    "AnnCost",
    "EnergyModel",
    "LayerCost",
    "OperationCounter",
    "OperationReport",
    "ann_operations",
    "count_synaptic_operations",
    "network_fanout",
    "ops_from_mapping",
    "record_operations",
    "synaptic_fanout",
]

#: Names that lived here until 0.1 and moved up the layers: kept as deprecated aliases for one
#: release (looked up on first use, so this package still imports nothing above it).
MOVED_IN_0_2 = {
    "CSV_COLUMNS": "spikebridge.reporting",
    "csv_values": "spikebridge.reporting",
    "record_fields": "spikebridge.reporting",
    "format_energy_table": "spikebridge.reporting",
    "plot_accuracy_vs_energy": "spikebridge.reporting",
    "plot_layer_operations": "spikebridge.reporting",
    "iteration_operations": "spikebridge.experiments",
}


__getattr__ = moved_names(__name__, MOVED_IN_0_2)
