"""Ensemble training: DeePMD-style loss and schedules, per-member training, learning curves."""

from eelt.train.metrics import evaluate_rmse
from eelt.train.trainer import MemberResult, TrainingDiverged, train_ensemble, train_member

__all__ = ["MemberResult", "TrainingDiverged", "evaluate_rmse", "train_ensemble", "train_member"]
