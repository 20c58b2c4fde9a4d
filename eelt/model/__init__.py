"""DeepPot-SE (se_e2_a) models in PyTorch: one model, an ensemble evaluated together, and
the ensemble as an ASE calculator; the first family of the model-family contract
(eelt.model.family)."""

from eelt.model.calculator import EnsembleCalculator
from eelt.model.deeppot import DeepPot
from eelt.model.deviation import force_deviation
from eelt.model.ensemble import Ensemble
from eelt.model.neighbors import Batch, FrameGraph, build_graph, collate

__all__ = [
    "Batch",
    "DeepPot",
    "Ensemble",
    "EnsembleCalculator",
    "FrameGraph",
    "build_graph",
    "collate",
    "force_deviation",
]
