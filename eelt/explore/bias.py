"""Enhanced sampling for exploration: metadynamics on CVs, an uncertainty bias, and a calculator
that adds them (or any step-driven bias, such as a PLUMED input) to a base calculator.

Units: energies eV, forces eV/Angstrom, times fs, CVs in their own units (Angstrom, radians).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes

from eelt import keys
from eelt.explore.cv import CV, PERIOD

# BiasedCalculator results next to the base's (bias energy: keys.BIAS_ENERGY, eV)
UNBIASED_ENERGY = "unbiased_energy"  # eV, the base's energy
UNBIASED_FORCES = "unbiased_forces"  # eV/Angstrom, the base's forces
CV_VALUES = "cv_values"  # the metadynamics CVs at this geometry, in cv_names order
MEMBER_ENERGIES = "member_energies"  # eV (K,), from an ensemble base
MEMBER_FORCES = "member_forces"  # eV/Angstrom (K, N, 3), from an ensemble base

_CHUNK = 1024  # hills storage grows by this many rows
_GRID_BLOCK = 4_000_000  # grid points x hills evaluated at once in bias_on_grid


class Metadynamics:
    """(Well-tempered) metadynamics: a sum of Gaussian hills in CV space.

    V(s) = sum_i h_i exp(-sum_d (s_d - c_id)^2 / (2 sigma_id^2)), with the difference wrapped
    into [-pi, pi) for periodic CVs. A hill deposited at s has height ``height_eV`` times
    exp(-V(s) / (kB (gamma - 1) T)) when well-tempered (``biasfactor`` gamma > 1), else
    ``height_eV``. ``pace_steps`` is read by :class:`BiasedCalculator`, which deposits a hill
    every that many MD steps.
    """

    def __init__(
        self,
        cvs: Sequence[CV],
        height_eV: float,
        sigma: Sequence[float],
        pace_steps: int,
        biasfactor: float | None = None,
        temperature_K: float = 300.0,
    ) -> None:
        self.cvs = list(cvs)
        if not self.cvs:
            raise ValueError("metadynamics needs at least one CV")
        if len(sigma) != len(self.cvs):
            raise ValueError(f"one sigma per CV: {len(self.cvs)} CVs, {len(sigma)} sigmas")
        if min(sigma) <= 0 or height_eV <= 0 or pace_steps < 1:
            raise ValueError("sigma and height_eV must be positive and pace_steps at least 1")
        if biasfactor is not None and biasfactor < 1:
            raise ValueError(f"biasfactor must be > 1 (or 1 / None: plain), got {biasfactor}")
        self.height_eV = float(height_eV)
        self.sigma = np.asarray(sigma, dtype=float)
        self.pace_steps = int(pace_steps)
        self.biasfactor = None if biasfactor in (None, 1) else float(biasfactor)
        self.temperature_K = float(temperature_K)
        self._periodic = torch.tensor([bool(cv.periodic) for cv in self.cvs])
        n = len(self.cvs)
        self._n = 0
        self._times = torch.zeros(_CHUNK, dtype=torch.float64)
        self._centers = torch.zeros(_CHUNK, n, dtype=torch.float64)
        self._sigmas = torch.ones(_CHUNK, n, dtype=torch.float64)
        self._heights = torch.zeros(_CHUNK, dtype=torch.float64)

    @property
    def well_tempered(self) -> bool:
        return self.biasfactor is not None

    @property
    def cv_names(self) -> list[str]:
        return [cv.name for cv in self.cvs]

    @property
    def n_hills(self) -> int:
        return self._n

    @property
    def hills(self) -> np.ndarray:
        """(n_hills, 2 + 2 n_cv): time_fs, centers, sigmas, height_eV (the height added)."""
        n = self._n
        return torch.cat(
            [
                self._times[:n, None],
                self._centers[:n],
                self._sigmas[:n],
                self._heights[:n, None],
            ],
            dim=1,
        ).numpy()

    def cv_values(self, positions: np.ndarray | torch.Tensor, cell: np.ndarray) -> np.ndarray:
        """The CVs at these positions (Angstrom)."""
        with torch.no_grad():
            pos = torch.as_tensor(positions, dtype=torch.float64)
            return self._evaluate(pos, torch.as_tensor(np.asarray(cell), dtype=torch.float64))

    def bias(
        self, positions: np.ndarray | torch.Tensor, cell: np.ndarray
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """Bias energy (eV), bias forces -dV/dx (N, 3) eV/Angstrom and the CV values.

        dV/ds comes from the hills in closed form; autograd only runs back through the CVs.
        """
        pos = torch.as_tensor(positions, dtype=torch.float64).detach().clone()
        cell_t = torch.as_tensor(np.asarray(cell), dtype=torch.float64)
        if self._n == 0:
            with torch.no_grad():
                return 0.0, np.zeros(tuple(pos.shape)), self._evaluate(pos, cell_t)
        pos.requires_grad_(True)
        s = torch.stack([cv(pos, cell_t) for cv in self.cvs])
        with torch.no_grad():
            energy, slope = self._value_and_slope(s.detach())
        gradient = None
        if s.requires_grad:
            (gradient,) = torch.autograd.grad((s * slope).sum(), pos, allow_unused=True)
        forces = np.zeros(tuple(pos.shape)) if gradient is None else -gradient.numpy()
        return float(energy), forces, s.detach().numpy()

    def bias_at(self, cv_values: Sequence[float]) -> float:
        """V(s) in eV at one point of CV space."""
        with torch.no_grad():
            s = torch.as_tensor(np.asarray(cv_values, dtype=float))[None, :]
            return float(self._gaussians(s)[0])

    def hill_height(self, cv_values: Sequence[float]) -> float:
        """Height (eV) a hill deposited at these CV values gets now."""
        if not self.well_tempered:
            return self.height_eV
        delta_T = (self.biasfactor - 1.0) * self.temperature_K
        return self.height_eV * math.exp(-self.bias_at(cv_values) / (units.kB * delta_T))

    def deposit(self, cv_values: Sequence[float], time_fs: float) -> None:
        """Add a hill at ``cv_values`` (its height from :meth:`hill_height`)."""
        center = np.asarray(cv_values, dtype=float)
        if center.shape != (len(self.cvs),):
            raise ValueError(f"expected {len(self.cvs)} CV values, got shape {center.shape}")
        self._append(time_fs, center, self.sigma, self.hill_height(center))

    def set_hills(self, hills: np.ndarray) -> None:
        """Replace the hills by rows as :attr:`hills` gives them (to restore a walker)."""
        hills = np.atleast_2d(np.asarray(hills, dtype=float))
        n_cv = len(self.cvs)
        if hills.size and hills.shape[1] != 2 + 2 * n_cv:
            raise ValueError(f"hills need {2 + 2 * n_cv} columns, got {hills.shape[1]}")
        self._n = 0
        for row in hills if hills.size else []:
            self._append(row[0], row[1 : 1 + n_cv], row[1 + n_cv : 1 + 2 * n_cv], row[-1])

    def write_hills(self, path: str | Path) -> None:
        """Write the hills as a PLUMED-like HILLS file (time fs, CVs, sigmas, height eV, biasf).

        As PLUMED does, a well-tempered run writes height x gamma/(gamma - 1), so that the
        column sums to -F; :meth:`read_hills` undoes it.
        """
        names = self.cv_names
        biasf = self.biasfactor or 1.0
        lines = ["#! FIELDS time " + " ".join(names + [f"sigma_{n}" for n in names])]
        lines[0] += " height biasf"
        lines.append("#! SET multivariate false")
        lines.append("#! SET kerneltype gaussian")
        for cv in self.cvs:
            if cv.periodic:
                lines += [f"#! SET min_{cv.name} -pi", f"#! SET max_{cv.name} pi"]
        lines.append("# units: time fs, height eV, CVs and sigmas in the CVs' units")
        scale = biasf / (biasf - 1.0) if self.well_tempered else 1.0
        for row in self.hills:
            values = list(row[:-1]) + [row[-1] * scale, biasf]
            lines.append(" ".join(f"{v:.12g}" for v in values))
        Path(path).write_text("\n".join(lines) + "\n")

    def read_hills(self, path: str | Path) -> None:
        """Restore the hills from a file :meth:`write_hills` wrote (same CVs, same biasfactor)."""
        text = Path(path).read_text().splitlines()
        fields = next((line.split()[2:] for line in text if line.startswith("#! FIELDS")), None)
        names = self.cv_names
        expected = ["time", *names, *[f"sigma_{n}" for n in names], "height", "biasf"]
        if fields != expected:
            raise ValueError(f"{path}: HILLS fields {fields} do not match this bias's {expected}")
        rows = [line.split() for line in text if line.strip() and not line.startswith("#")]
        hills = np.array(rows, dtype=float).reshape(-1, len(expected))
        biasf = self.biasfactor or 1.0
        if hills.size and not np.allclose(hills[:, -1], biasf):
            raise ValueError(f"{path}: biasf {hills[0, -1]} differs from this bias's {biasf}")
        scale = biasf / (biasf - 1.0) if self.well_tempered else 1.0
        hills = hills[:, :-1].copy()
        hills[:, -1] /= scale
        self.set_hills(hills)

    def bias_on_grid(self, grids: Sequence[np.ndarray]) -> np.ndarray:
        """V (eV) on the product grid of 1-D arrays, one per CV (indexing "ij")."""
        if len(grids) != len(self.cvs):
            raise ValueError(f"one grid per CV: {len(self.cvs)} CVs, {len(grids)} grids")
        axes = [torch.as_tensor(np.asarray(g, dtype=float)) for g in grids]
        points = torch.stack([m.reshape(-1) for m in torch.meshgrid(*axes, indexing="ij")], 1)
        block = max(1, _GRID_BLOCK // max(self._n, 1))
        with torch.no_grad():
            values = torch.cat([self._gaussians(p) for p in torch.split(points, block)])
        return values.reshape(*[len(a) for a in axes]).numpy()

    def free_energy(self, grids: Sequence[np.ndarray]) -> np.ndarray:
        """F (eV) on the grid, min 0: -gamma/(gamma - 1) V well-tempered, -V plain."""
        scale = self.biasfactor / (self.biasfactor - 1.0) if self.well_tempered else 1.0
        free = -scale * self.bias_on_grid(grids)
        return free - free.min()

    def _evaluate(self, pos: torch.Tensor, cell: torch.Tensor) -> np.ndarray:
        return np.array([float(cv(pos, cell)) for cv in self.cvs])

    def _delta(self, s: torch.Tensor) -> torch.Tensor:
        """s (P, n_cv) minus the hill centres: (P, n_hills, n_cv), periodic CVs wrapped."""
        delta = s[:, None, :] - self._centers[None, : self._n, :]
        wrapped = torch.remainder(delta + math.pi, PERIOD) - math.pi
        return torch.where(self._periodic, wrapped, delta)

    def _gaussians(self, s: torch.Tensor) -> torch.Tensor:
        """V at points s (P, n_cv), one vectorised sum over the hills."""
        n = self._n
        if n == 0:
            return torch.zeros(s.shape[0], dtype=torch.float64)
        exponent = -0.5 * ((self._delta(s) / self._sigmas[None, :n, :]) ** 2).sum(-1)
        return (self._heights[None, :n] * torch.exp(exponent)).sum(-1)

    def _value_and_slope(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """V (eV) and dV/ds at one point s (n_cv,)."""
        n = self._n
        scaled = self._delta(s[None, :])[0] / self._sigmas[:n]  # (n_hills, n_cv)
        kernels = self._heights[:n] * torch.exp(-0.5 * (scaled**2).sum(-1))
        slope = -(kernels[:, None] * scaled / self._sigmas[:n]).sum(0)
        return kernels.sum(), slope

    def _append(self, time_fs: float, center, sigma, height: float) -> None:
        if self._n == len(self._heights):
            grow = _CHUNK + self._n // 2
            self._times = torch.cat([self._times, torch.zeros(grow, dtype=torch.float64)])
            shape = (grow, len(self.cvs))
            self._centers = torch.cat([self._centers, torch.zeros(shape, dtype=torch.float64)])
            self._sigmas = torch.cat([self._sigmas, torch.ones(shape, dtype=torch.float64)])
            self._heights = torch.cat([self._heights, torch.zeros(grow, dtype=torch.float64)])
        n = self._n
        self._times[n] = float(time_fs)
        self._centers[n] = torch.as_tensor(np.asarray(center, dtype=float))
        self._sigmas[n] = torch.as_tensor(np.asarray(sigma, dtype=float))
        self._heights[n] = float(height)
        self._n += 1


class UncertaintyBias:
    """Uncertainty-biased MD (after Kulichenko et al. 2023): V = -strength_eV * sigma_E.

    sigma_E (eV) is the std over members of the energy, sigma_E^2 = mean_k (E_k - <E>)^2. Its
    gradient from the members' forces F_k = -dE_k/dx is
    d sigma_E/dx = -(1/sigma_E) mean_k (E_k - <E>)(F_k - <F>), so the bias force is
    -dV/dx = strength_eV * d sigma_E/dx: it pushes towards where the members disagree.
    This is the linear form; Kulichenko et al.'s bounded A (exp(-sigma^2 / (N B^2)) - 1) is not
    implemented, so a strong bias is unbounded below: keep MD guards (closest contact) on.
    """

    def __init__(
        self, strength_eV: float, min_sigma_eV: float = 1e-10, stride_steps: int = 1
    ) -> None:
        """``strength_eV`` is dimensionless (eV of bias per eV of energy std). With
        ``stride_steps`` n > 1 the bias acts as an impulse (multiple time stepping, as r-RESPA
        treats a slow force): n times its force on every n-th step and none between, so the
        members run only on those steps."""
        if strength_eV < 0:
            raise ValueError(f"strength_eV must be >= 0, got {strength_eV}")
        if int(stride_steps) != stride_steps or stride_steps < 1:
            raise ValueError(f"stride_steps must be a positive integer, got {stride_steps}")
        self.strength_eV = float(strength_eV)
        self.min_sigma_eV = float(min_sigma_eV)
        self.stride_steps = int(stride_steps)

    def bias_from_members(
        self, member_energies: np.ndarray, member_forces: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """Bias energy (eV) and forces (N, 3) eV/Angstrom from (K,) energies, (K, N, 3) forces."""
        energies = np.asarray(member_energies, dtype=float)
        forces = np.asarray(member_forces, dtype=float)
        d_energy = energies - energies.mean()
        sigma = float(np.sqrt(np.mean(d_energy**2)))
        if sigma < self.min_sigma_eV:
            return -self.strength_eV * sigma, np.zeros(forces.shape[1:])
        d_forces = forces - forces.mean(axis=0)
        grad_sigma = -np.einsum("k,kna->na", d_energy, d_forces) / (len(energies) * sigma)
        return -self.strength_eV * sigma, self.strength_eV * grad_sigma


class StepBias(Protocol):
    """Any other bias, e.g. a PLUMED input: called once per calculation with the MD step."""

    def bias(self, positions: np.ndarray, cell: np.ndarray, step: int) -> tuple[float, np.ndarray]:
        """Bias energy (eV) and forces (N, 3) eV/Angstrom."""
        ...


Bias = Metadynamics | UncertaintyBias | StepBias


class BiasedCalculator(Calculator):
    """A base calculator plus biases: energy, free_energy and forces include them.

    All the base's results are kept (deviations, member energies, ...), with the unbiased ones
    as ``unbiased_energy`` / ``unbiased_forces``; ``bias_energy`` (eV) and ``cv_values`` (the
    metadynamics CVs, in order) are added. Stress is the base's, unchanged: these biases do not
    depend on the cell. With an :class:`UncertaintyBias` every base calculation evaluates all
    members (``request_deviation()`` is called before each). The MD loop calls
    :meth:`after_step` once per step so the metadynamics biases deposit their hills. Any other
    bias (:class:`StepBias`) is called once per geometry as ``bias(positions, cell, step)``, with
    step 0 for the first geometry and one more for each new one (one per MD step).

    A 3-D periodic cell always gets the base's stress with its forces (NPT asks for both), so a
    stress request never repeats the base calculation.
    """

    implemented_properties = [keys.ENERGY, "free_energy", keys.FORCES, keys.STRESS]

    def __init__(self, base: Calculator, biases: Sequence[Bias], **kwargs) -> None:
        super().__init__(**kwargs)
        self.base = base
        self.biases = list(biases)
        self.metadynamics = [b for b in self.biases if isinstance(b, Metadynamics)]
        self.needs_members = any(isinstance(b, UncertaintyBias) for b in self.biases)
        self._step_biases = [
            b for b in self.biases if not isinstance(b, (Metadynamics, UncertaintyBias))
        ]
        self.n_steps = 0
        self._base_results: dict = {}
        self._step_bias: tuple[float, np.ndarray] = (0.0, np.zeros((0, 3)))
        self._geometry = -1  # the step of the latest geometry the step biases saw
        strides = {b.stride_steps for b in self.biases if isinstance(b, UncertaintyBias)}
        if len(strides) > 1:
            raise ValueError(f"uncertainty biases with different stride_steps: {sorted(strides)}")
        self._stride = strides.pop() if strides else 1
        self._members_now = False

    @property
    def cv_names(self) -> list[str]:
        return [name for metad in self.metadynamics for name in metad.cv_names]

    @property
    def request_deviation(self):
        """The base's ``request_deviation`` (absent when the base has none)."""
        if not hasattr(self.base, "request_deviation"):
            raise AttributeError(f"{type(self.base).__name__} has no request_deviation")
        return self.base.request_deviation

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        wanted = [keys.ENERGY, keys.FORCES]
        periodic = self.atoms.pbc.any() and self.atoms.cell.rank == 3
        if keys.STRESS in self.base.implemented_properties and (
            periodic or keys.STRESS in properties
        ):
            wanted.append(keys.STRESS)
        changes = self.base.check_state(self.atoms)
        self.base.results = {}
        new_geometry = bool(system_changes) or self._geometry < 0
        self._members_now = (
            self.needs_members and (self._geometry + int(new_geometry)) % self._stride == 0
        )
        if self._members_now and hasattr(self.base, "request_deviation"):
            self.base.request_deviation()  # this bias needs every member, every step
        self.base.calculate(self.atoms, wanted, changes)
        self._base_results = dict(self.base.results)
        if new_geometry:  # a new geometry: the step biases once
            self._geometry += 1
            self._step_bias = self._step_biases_at(self._geometry)
        self.results = self._biased()

    def _step_biases_at(self, step: int) -> tuple[float, np.ndarray]:
        positions, cell = self.atoms.positions, self.atoms.cell.array
        energy, forces = 0.0, np.zeros((len(self.atoms), 3))
        for bias in self._step_biases:  # they may count their calls (PLUMED deposits)
            e, f = bias.bias(positions, cell, step)
            energy, forces = energy + e, forces + f
        return energy, forces

    def after_step(self, time_fs: float) -> None:
        """Count an MD step; every ``pace_steps`` a metadynamics deposits a hill at the CVs of
        the latest calculation (whose energy and forces are then updated for the new hill)."""
        self.n_steps += 1
        if not self.results or CV_VALUES not in self.results:
            return
        cv_values, start, deposited = self.results[CV_VALUES], 0, False
        for metad in self.metadynamics:
            stop = start + len(metad.cvs)
            if self.n_steps % metad.pace_steps == 0:
                metad.deposit(cv_values[start:stop], time_fs)
                deposited = True
            start = stop
        if deposited:
            self.results = self._biased()

    def write_outputs(self, prefix: Path) -> list[Path]:
        """Per metadynamics bias: its hills (``PREFIX.hills``, PLUMED-like) and, for 1 or 2 CVs,
        the free-energy estimate on a grid (``PREFIX.fes.npz``: the grids and F in eV, and a
        plot ``PREFIX.fes.png``); a second bias gets ``PREFIX.1.hills`` and so on."""
        from eelt.explore.plots import plot_free_energy

        written = []
        for k, metad in enumerate(self.metadynamics):
            stem = f"{prefix}{'' if k == 0 else f'.{k}'}"
            hills = Path(f"{stem}.hills")
            metad.write_hills(hills)
            written.append(hills)
            if not 1 <= len(metad.cvs) <= 2 or metad.n_hills == 0:
                continue
            grids = [
                _fes_grid(cv, metad.hills[:, 1 + d], metad.sigma[d])
                for d, cv in enumerate(metad.cvs)
            ]
            free = metad.free_energy(grids)
            fes = Path(f"{stem}.fes.npz")
            named = {f"grid_{n}": g for n, g in zip(metad.cv_names, grids, strict=True)}
            np.savez(fes, free_energy_eV=free, cv_names=np.array(metad.cv_names), **named)
            written += [fes, plot_free_energy(grids, free, metad.cv_names, Path(f"{stem}.fes.png"))]
        return written

    def _biased(self) -> dict:
        """The base's results plus every bias at the latest calculation's positions."""
        base_results = self._base_results
        results = dict(base_results)
        energy = float(base_results[keys.ENERGY])
        forces = np.asarray(base_results[keys.FORCES], dtype=float)
        bias_energy, bias_forces = self._step_bias
        bias_forces = bias_forces + np.zeros_like(forces)
        cv_values = []
        for metad in self.metadynamics:
            e, f, s = metad.bias(self.atoms.positions, self.atoms.cell.array)
            bias_energy, bias_forces = bias_energy + e, bias_forces + f
            cv_values.extend(s)
        if self._members_now:
            if MEMBER_ENERGIES not in base_results or MEMBER_FORCES not in base_results:
                raise RuntimeError(
                    f"{type(self.base).__name__} gave no member_energies / member_forces; "
                    "an UncertaintyBias needs every member at every step of its stride"
                )
            for bias in self.biases:
                if isinstance(bias, UncertaintyBias):
                    e, f = bias.bias_from_members(
                        base_results[MEMBER_ENERGIES], base_results[MEMBER_FORCES]
                    )
                    # an impulse: the force of stride_steps steps at once
                    bias_energy, bias_forces = bias_energy + e, bias_forces + bias.stride_steps * f
        free = float(base_results.get("free_energy", energy))
        results |= {
            UNBIASED_ENERGY: energy,
            UNBIASED_FORCES: forces.copy(),
            keys.ENERGY: energy + bias_energy,
            "free_energy": free + bias_energy,
            keys.FORCES: forces + bias_forces,
            keys.BIAS_ENERGY: bias_energy,
            CV_VALUES: np.array(cv_values, dtype=float),
        }
        return results


def _fes_grid(cv, centers: np.ndarray, sigma: float, n: int = 73) -> np.ndarray:
    """Grid points along one CV for the free-energy estimate: a full turn for a periodic CV,
    else the hills' range widened by 3 sigma."""
    if cv.periodic:
        return np.linspace(-math.pi, math.pi, n)
    return np.linspace(centers.min() - 3 * sigma, centers.max() + 3 * sigma, n)
