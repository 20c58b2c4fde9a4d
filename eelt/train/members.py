"""The members a training starts from (new ones from their seeds, or a previous ensemble's
checkpoints) and what becomes of each at the end (its checkpoint, curve and errors)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from eelt.config import TrainConfig
from eelt.model import DeepPot
from eelt.model.deeppot import ARCHITECTURE
from eelt.model.stack import STAT_NAMES
from eelt.train.curves import write_curve
from eelt.train.data import LabeledFrame
from eelt.train.frame_set import FrameSet
from eelt.train.loss import LossPrefactors
from eelt.train.result import MemberResult, TrainingDiverged


def member_seed(base_seed: int, member: int) -> int:
    """Seed of ensemble member ``member``: distinct per member."""
    return base_seed + member


def load_warm_start(path: str | Path, train: TrainConfig, type_map: list[str], who: str) -> DeepPot:
    """The checkpoint a warm start begins from, in the training precision; an error naming
    ``who`` when it is missing or has another type_map."""
    try:
        return DeepPot.warm_start(path, type_map, train.precision)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{who}: {err}") from None
    except ValueError as err:
        raise ValueError(f"{who}: {err}") from None


def initial_models(
    train: TrainConfig,
    type_map: list[str],
    seeds: list[int],
    init_from: list[str] | None,
    whos: list[str],
    statistics_frames: list,
) -> list[DeepPot]:
    """The members before training, in the training precision. Cold: a DeepPot per seed, all
    with the statistics of ``statistics_frames`` (the training split); warm: each member's
    checkpoint, all of one architecture."""
    if init_from is None:
        models = [
            DeepPot.from_config(train.model, type_map, seed, train.precision) for seed in seeds
        ]
        models[0].set_statistics(statistics_frames)
        with torch.no_grad():
            for model in models[1:]:
                for name in (*STAT_NAMES, "energy_shift"):
                    getattr(model, name).copy_(getattr(models[0], name))
        return models
    models = []
    for path, who in zip(init_from, whos, strict=True):
        model = load_warm_start(path, train, type_map, who)
        for name in ARCHITECTURE if models else ():
            if model.hparams[name] != models[0].hparams[name]:
                raise ValueError(
                    f"{who}: init_from {path} has {name}={model.hparams[name]}, "
                    f"{whos[0]}'s has {models[0].hparams[name]}; members that train as one "
                    "stack need one architecture"
                )
        models.append(model)
    return models


def finish_member(
    model: DeepPot,
    out_path: Path,
    train: TrainConfig,
    train_frames: list[LabeledFrame],
    val_frames: list[LabeledFrame],
    rows: list[dict[str, float]],
    steps_done: int,
    final_prefs: LossPrefactors,
    last_lr: float,
    who: str,
    t_start: float,
    result: MemberResult,
) -> MemberResult:
    """A trained member (in training precision) to its checkpoint: cast to the model precision,
    refit the energy shift, errors on the full training and validation sets as the curve's
    last row, save. ``result``: the member's MemberResult, errors and wall time filled here."""
    curve_path = out_path.with_suffix(".csv")
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        write_curve(curve_path, rows)
        raise TrainingDiverged(f"{who}: weights became NaN by step {steps_done}")
    model = model.with_precision(train.model.precision)
    model.eval()
    training_set = FrameSet(train_frames, model)
    training_set.refit_energy_shifts(model, [0])
    (train_e,), (train_f,) = training_set.errors(model)
    (val_e,), (val_f,) = FrameSet(val_frames, model).errors(model)
    train_e, train_f, val_e, val_f = (float(x) for x in (train_e, train_f, val_e, val_f))
    rows.append(
        {
            "step": steps_done,
            "lr": last_lr,
            "loss": final_prefs.energy * (train_e / 1e3) ** 2
            + final_prefs.forces * (train_f / 1e3) ** 2,
            "train_energy_rmse_meV_per_atom": train_e,
            "train_force_rmse_meV_per_A": train_f,
            "val_energy_rmse_meV_per_atom": val_e,
            "val_force_rmse_meV_per_A": val_f,
            "wall_s": time.perf_counter() - t_start,
        }
    )
    write_curve(curve_path, rows)
    model.save(out_path)  # atomic
    result.wall_s = time.perf_counter() - t_start
    result.train_energy_rmse_meV_per_atom = train_e
    result.train_force_rmse_meV_per_A = train_f
    result.val_energy_rmse_meV_per_atom = val_e
    result.val_force_rmse_meV_per_A = val_f
    return result
