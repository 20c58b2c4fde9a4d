"""What a Dask worker runs for one walker: load the ensemble, wrap it in the stage's biases, run."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from ase import Atoms

from eelt import atomic
from eelt.explore.dynamics import MDSettings
from eelt.explore.walker import WalkerSummary, run_walker


def make_biases(specs: list[dict], temperature_K: float, timestep_fs: float, atoms: Atoms) -> list:
    """The bias objects of a stage's ``biases`` (config dicts) for one walker."""
    from eelt.explore.bias import Metadynamics, UncertaintyBias
    from eelt.explore.cv import cv_from_spec

    biases = []
    for spec in specs:
        kind = spec["kind"]
        if kind == "metadynamics":
            cvs = [
                cv_from_spec({k: v for k, v in cv.items() if v is not None}) for cv in spec["cvs"]
            ]
            biases.append(
                Metadynamics(
                    cvs,
                    height_eV=spec["height_eV"],
                    sigma=spec["sigma"],
                    pace_steps=spec["pace_steps"],
                    biasfactor=spec["biasfactor"],
                    temperature_K=temperature_K,
                )
            )
        elif kind == "uncertainty":
            biases.append(
                UncertaintyBias(spec["strength"], stride_steps=spec.get("stride_steps", 1))
            )
        elif kind == "plumed":
            from eelt.explore.plumed import PlumedBias

            biases.append(PlumedBias(spec["script"], atoms, timestep_fs, temperature_K))
        else:
            raise ValueError(f"unknown bias kind {kind!r}")
    return biases


def walker_job(
    ensemble_dir: str,
    start: Atoms,
    out_path: str,
    walker: str,
    *,
    device: str = "cpu",
    forces_from: str = "first",
    md: dict | None = None,
    biases: list[dict] = (),
    **walker_kwargs,
) -> WalkerSummary:
    """Load the ensemble from ``ensemble_dir`` (model-*.pt) onto ``device`` and run one walker
    driven by ``forces_from`` ("first": member 0, the ensemble at dumps; "mean"), under the
    ``biases`` (config dicts) if any; ``md`` holds :class:`MDSettings` fields and
    ``walker_kwargs`` the rest of :func:`run_walker`'s arguments."""
    from eelt.model import EnsembleCalculator
    from eelt.model.families import load_ensemble

    ensemble = load_ensemble(ensemble_dir, map_location=device)
    calc = EnsembleCalculator(ensemble, forces_from=forces_from)
    names = {f.name for f in fields(MDSettings)}
    settings = MDSettings(**{k: v for k, v in (md or {}).items() if k in names})
    if biases:
        from eelt.explore.bias import BiasedCalculator

        calc = BiasedCalculator(
            calc,
            make_biases(
                list(biases), walker_kwargs["temperature_K"], walker_kwargs["timestep_fs"], start
            ),
        )
    summary = run_walker(
        start, calc, out_path=Path(out_path), walker=walker, md=settings, **walker_kwargs
    )
    # written last: a walker with a summary file is finished and never runs again on resume
    atomic.write_json(summary_path(out_path), summary.to_dict())
    return summary


def summary_path(out_path: str | Path) -> Path:
    """Where a finished walker's summary lies, beside its trajectory."""
    return Path(out_path).with_suffix(".summary.json")


def finished_walker(out_path: str | Path) -> WalkerSummary | None:
    """The summary of a walker that finished earlier (its trajectory in place), or None."""
    path = summary_path(out_path)
    if not path.is_file() or not Path(out_path).is_file():
        return None
    return WalkerSummary(**atomic.read_json(path))
