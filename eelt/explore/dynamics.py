"""The MD integrators a walker runs: NVE, NVT (Langevin, Bussi, Nose-Hoover chain) and NPT
(MTK barostats with a Nose-Hoover chain, isotropic or anisotropic; Langevin-BAOAB with a
Langevin-Hoover barostat), all ASE's own. Pressures in bar, times in fs, temperatures in K.

A temperature ramp moves the thermostat's target linearly along the walker (Langevin, Bussi and
Langevin-BAOAB; the Nose-Hoover chains fix their masses from the target, so they cannot ramp).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.md.bussi import Bussi
from ase.md.langevin import Langevin
from ase.md.langevinbaoab import LangevinBAOAB
from ase.md.md import MolecularDynamics
from ase.md.nose_hoover_chain import MTKNPT, IsotropicMTKNPT, NoseHooverChainNVT
from ase.md.verlet import VelocityVerlet

from eelt.config import RAMPABLE

ENSEMBLES = ("nve", "nvt", "npt")
THERMOSTATS = ("langevin", "bussi", "nose-hoover")
BAROSTATS = ("mtk", "langevin")
CELL_FLUCTUATIONS = ("isotropic", "anisotropic")


@dataclass(frozen=True)
class MDSettings:
    """One walker's integrator: ensemble, thermostat/barostat and their time constants."""

    ensemble: str = "nvt"
    thermostat: str = "langevin"
    barostat: str = "mtk"
    cell_fluctuation: str = "isotropic"
    temperature_K: float = 300.0
    temperature_end_K: float | None = None
    pressure_bar: float | None = None
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.01
    thermostat_time_fs: float = 100.0
    barostat_time_fs: float = 1000.0

    def check(self, atoms: Atoms) -> None:
        """Raise ValueError naming the first setting that cannot run on ``atoms``."""
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {self.ensemble!r}")
        if self.thermostat not in THERMOSTATS:
            raise ValueError(f"thermostat must be one of {THERMOSTATS}, got {self.thermostat!r}")
        if self.barostat not in BAROSTATS:
            raise ValueError(f"barostat must be one of {BAROSTATS}, got {self.barostat!r}")
        if self.cell_fluctuation not in CELL_FLUCTUATIONS:
            raise ValueError(
                f"cell_fluctuation must be one of {CELL_FLUCTUATIONS}, got {self.cell_fluctuation!r}"
            )
        for name in ("temperature_K", "timestep_fs", "friction_per_fs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("thermostat_time_fs", "barostat_time_fs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.temperature_end_K is not None:
            if not self.temperature_end_K > 0:
                raise ValueError(f"temperature_end_K must be > 0, got {self.temperature_end_K!r}")
            if self.key() not in RAMPABLE:
                raise ValueError(
                    f"a temperature ramp needs a Langevin or Bussi thermostat (nvt) or the "
                    f"Langevin barostat (npt), not {self.ensemble} with {self._coupling()}"
                )
        if self.ensemble == "npt":
            if self.pressure_bar is None:
                raise ValueError("npt needs pressure_bar")
            if not atoms.pbc.all() or atoms.cell.volume <= 0:
                raise ValueError("npt needs a structure periodic in all three directions")

    def key(self) -> tuple[str, str]:
        return (self.ensemble, self.barostat if self.ensemble == "npt" else self.thermostat)

    def _coupling(self) -> str:
        return f"the {self.barostat} barostat" if self.ensemble == "npt" else f"{self.thermostat}"

    def temperature_at(self, fraction: float) -> float:
        """The target temperature (K) a fraction (0..1) of the way along the walker."""
        if self.temperature_end_K is None:
            return self.temperature_K
        f = min(max(fraction, 0.0), 1.0)
        return self.temperature_K + f * (self.temperature_end_K - self.temperature_K)


BAR = 1e5 * units.Pascal  # 1 bar in eV/Angstrom^3


def make_dynamics(
    atoms: Atoms, md: MDSettings, rng: np.random.Generator, temperature_K: float | None = None
) -> MolecularDynamics:
    """The ASE integrator for ``md`` on ``atoms`` (with its calculator and momenta set);
    ``temperature_K`` overrides the starting target (a ramp resumed part-way)."""
    md.check(atoms)
    dt = md.timestep_fs * units.fs
    temp = md.temperature_K if temperature_K is None else temperature_K
    tdamp = md.thermostat_time_fs * units.fs
    pdamp = md.barostat_time_fs * units.fs
    if md.ensemble == "nve":
        return VelocityVerlet(atoms, timestep=dt)
    if md.ensemble == "nvt":
        if md.thermostat == "langevin":
            return Langevin(
                atoms,
                timestep=dt,
                temperature_K=temp,
                friction=md.friction_per_fs / units.fs,
                fixcm=False,
                rng=rng,
            )
        if md.thermostat == "bussi":
            return Bussi(atoms, timestep=dt, temperature_K=temp, taut=tdamp, rng=rng)
        return NoseHooverChainNVT(atoms, timestep=dt, temperature_K=temp, tdamp=tdamp)
    pressure = md.pressure_bar * BAR
    if md.barostat == "mtk":
        cls = IsotropicMTKNPT if md.cell_fluctuation == "isotropic" else MTKNPT
        return cls(
            atoms, timestep=dt, temperature_K=temp, pressure_au=pressure, tdamp=tdamp, pdamp=pdamp
        )
    # ASE's external stress is minus the pressure
    return LangevinBAOAB(
        atoms,
        timestep=dt,
        temperature_K=temp,
        externalstress=-pressure,
        hydrostatic=md.cell_fluctuation == "isotropic",
        T_tau=1.0 / (md.friction_per_fs / units.fs),
        P_tau=pdamp,
        rng=rng,
    )


def set_target_temperature(dyn: MolecularDynamics, temperature_K: float) -> None:
    """Move a running thermostat's target (Langevin, Bussi, Langevin-BAOAB)."""
    if isinstance(dyn, Langevin):
        dyn.set_temperature(temperature_K=temperature_K)
    elif isinstance(dyn, Bussi):
        dyn.temp = temperature_K * units.kB
        dyn.target_kinetic_energy = 0.5 * dyn.temp * dyn.ndof
    elif isinstance(dyn, LangevinBAOAB):
        dyn.set_temperature(temperature_K)
    else:
        raise ValueError(f"{type(dyn).__name__} cannot ramp its temperature")
