"""A walker's plot: its force deviation, collective variables and cell volume over time."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from ase import Atoms

from eelt import keys

_PYPLOT = threading.Lock()  # pyplot and mathtext are not thread-safe (walkers in a thread pool)


def plot_walker(frames: list[Atoms], path: Path, cv_names: list[str] = ()) -> Path:
    """Max force deviation (eV/A, log scale) against MD step, one colour per segment (restarts),
    then one panel per CV and, for a cell that changes, the volume (A^3); saved as PNG."""
    with _PYPLOT:
        return _plot(frames, path, cv_names)


def _plot(frames: list[Atoms], path: Path, cv_names: list[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([f.info[keys.STEP] for f in frames])
    segments = np.array([f.info.get(keys.SEGMENT, 0) for f in frames])
    volumes = np.array([abs(f.cell.volume) if f.pbc.all() else 0.0 for f in frames])
    panels = [("max_devi_f (eV/A)", np.array([f.info[keys.MAX_DEVI_F] for f in frames]))]
    panels += [
        (name, np.array([f.info.get(f"cv_{name}", np.nan) for f in frames])) for name in cv_names
    ]
    if volumes.max() > 0 and np.ptp(volumes) > 1e-6 * volumes.max():
        panels.append(("volume (A^3)", volumes))
    fig, axes = plt.subplots(len(panels), 1, figsize=(6.4, 1.9 + 1.5 * len(panels)), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, (label, values) in zip(axes, panels, strict=True):
        for seg in np.unique(segments):
            mask = segments == seg
            ax.plot(steps[mask], values[mask], ".-", ms=2, lw=0.6, label=f"segment {seg}")
        ax.set_ylabel(label)
    if np.all(panels[0][1] > 0):
        axes[0].set_yscale("log")
    if len(np.unique(segments)) > 1:
        axes[0].legend(fontsize=7)
    axes[-1].set_xlabel("MD step")
    axes[0].set_title(str(frames[0].info.get(keys.WALKER, "")))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_free_energy(
    grids: list[np.ndarray], free_eV: np.ndarray, names: list[str], path: Path
) -> Path:
    """The metadynamics free-energy estimate (eV) along one CV, or as a map over two."""
    with _PYPLOT:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.0, 3.8))
        if len(grids) == 1:
            ax.plot(grids[0], free_eV)
            ax.set_xlabel(names[0])
            ax.set_ylabel("free energy (eV)")
        else:
            mesh = ax.contourf(grids[0], grids[1], free_eV.T, levels=20)
            fig.colorbar(mesh, ax=ax, label="free energy (eV)")
            ax.set_xlabel(names[0])
            ax.set_ylabel(names[1])
        ax.set_title("metadynamics estimate")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
    return path
