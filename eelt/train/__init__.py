"""Ensemble training: DeePMD-style loss and schedules, members trained as stacks, learning
curves, errors against labeled frames."""

from eelt.train.metrics import (
    ErrorSums,
    FramePredictions,
    error_metrics,
    evaluate_rmse,
    predict_frames,
)
from eelt.train.result import MemberResult, TrainingDiverged
from eelt.train.stacked import train_member, train_stacked
from eelt.train.trainer import train_ensemble, train_warm_or_fresh, training_busy_s

__all__ = [
    "ErrorSums",
    "FramePredictions",
    "MemberResult",
    "TrainingDiverged",
    "error_metrics",
    "evaluate_rmse",
    "predict_frames",
    "train_ensemble",
    "train_member",
    "train_stacked",
    "train_warm_or_fresh",
    "training_busy_s",
]
