"""Examination: split explored frames by trust levels and pick candidates for labeling."""

from eelt.examine.select import farthest_point_order, select_candidates, structure_fingerprint
from eelt.examine.trust import (
    ACCURATE,
    CANDIDATE,
    FAILED,
    TrustCounts,
    classify,
    deviation_histogram,
)

__all__ = [
    "ACCURATE",
    "CANDIDATE",
    "FAILED",
    "TrustCounts",
    "classify",
    "deviation_histogram",
    "farthest_point_order",
    "select_candidates",
    "structure_fingerprint",
]
