"""Ensemble training: DeePMD-style loss and schedules, per-member and stacked training,
learning curves."""

from eelt.train.metrics import (
    ErrorSums,
    FramePredictions,
    error_metrics,
    evaluate_rmse,
    predict_frames,
)
from eelt.train.stacked import train_stacked
from eelt.train.trainer import (
    MemberResult,
    TrainingDiverged,
    train_ensemble,
    train_member,
    train_warm_or_fresh,
)

__all__ = [
    "ErrorSums",
    "FramePredictions",
    "MemberResult",
    "TrainingDiverged",
    "error_metrics",
    "evaluate_rmse",
    "predict_frames",
    "train_ensemble",
    "train_warm_or_fresh",
    "train_member",
    "train_stacked",
]
