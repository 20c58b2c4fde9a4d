"""What training a member gives its caller: its result, or the error of a member that
diverged."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf or grew DIVERGENCE_FACTOR-fold over its minimum."""


@dataclass
class MemberResult:
    """Outcome of training one member; RMSE in meV/atom and meV/Angstrom (NaN: no frames)."""

    member: int
    checkpoint: str
    steps: int
    wall_s: float
    train_energy_rmse_meV_per_atom: float
    train_force_rmse_meV_per_A: float
    val_energy_rmse_meV_per_atom: float
    val_force_rmse_meV_per_A: float
    seed: int = 0
    n_train_frames: int = 0
    n_val_frames: int = 0
    init_from: str | None = None

    def to_dict(self) -> dict:
        """JSON-able dict (NaN written as None)."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, d: dict) -> MemberResult:
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        for k, v in kwargs.items():
            if v is None and k != "init_from":
                kwargs[k] = math.nan
        return cls(**kwargs)
