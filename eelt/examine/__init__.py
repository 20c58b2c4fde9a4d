"""Examination: split explored frames by trust levels, pick candidates for labeling, and check
the deviation against DFT force errors on labeled frames."""

from eelt.examine.calibration import (
    Calibration,
    calibrate,
    calibrated_trust_levels,
    calibration_plot,
)
from eelt.examine.convergence import (
    BUDGET_EXHAUSTED,
    CONVERGED,
    END_STATES,
    MAX_ITERATIONS,
    RUNNING,
    STALLED,
    error_converged,
    over_budget,
    ratio_converged,
    stalled,
)
from eelt.examine.heldout import draw_test_frames
from eelt.examine.select import farthest_point_order, select_candidates, structure_fingerprint
from eelt.examine.trust import (
    ACCURATE,
    CANDIDATE,
    FAILED,
    TRUST_CLASSES,
    TrustCounts,
    adaptive_trust_lo,
    classify,
    classify_frames,
    deviation_histogram,
)

__all__ = [
    "classify_frames",
    "ACCURATE",
    "BUDGET_EXHAUSTED",
    "CANDIDATE",
    "CONVERGED",
    "END_STATES",
    "FAILED",
    "MAX_ITERATIONS",
    "RUNNING",
    "STALLED",
    "TRUST_CLASSES",
    "Calibration",
    "TrustCounts",
    "adaptive_trust_lo",
    "calibrate",
    "calibrated_trust_levels",
    "calibration_plot",
    "classify",
    "deviation_histogram",
    "draw_test_frames",
    "error_converged",
    "farthest_point_order",
    "over_budget",
    "ratio_converged",
    "select_candidates",
    "stalled",
    "structure_fingerprint",
]
