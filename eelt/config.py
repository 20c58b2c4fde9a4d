"""The run configuration: one YAML file parsed into pydantic models (unknown keys refused).

Physics lives in the science sections (system, init, explore, examine, label, train);
where and how jobs run lives in ``execution``, so the same science runs on a laptop or
on Slurm. Units are in the field names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from eelt.errors import EeltError

# (ensemble, thermostat or barostat) pairs whose target temperature may ramp during a walk
RAMPABLE = {("nvt", "langevin"), ("nvt", "bussi"), ("npt", "langevin")}

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SystemConfig(Section):
    """Start structures (any ase.io format; paths relative to the config file)."""

    structures: list[str] = Field(
        min_length=1,
        description="start structure files (any ase.io format), relative to the config file",
    )
    type_map: list[str] | None = Field(
        default=None, description="element order of the model; default: elements of the structures"
    )


class SamplerConfig(Section):
    """A cheap thermal sampler before iteration 0: Langevin MD (friction 0.01/fs) on GFN-xTB
    (tblite; GFN2 for molecules, GFN1 for cells) or EMT from every start structure (and, with
    ``conformers``, from rotamers about each rotatable bond) at each temperature; ``n_frames``
    of the frames, chosen for diversity, are labeled with the run's labeler. Beside (not
    instead of) the perturbed copies."""

    kind: Literal["none", "xtb", "emt"] = Field(
        default="none", description="the cheap potential of the sampler MD; none: no sampler"
    )
    n_frames: Annotated[int, Field(ge=1)] = Field(
        default=40, description="sampler frames chosen and labeled, in all"
    )
    temperatures_K: list[PositiveFloat] | None = Field(
        default=None,
        description="temperatures of the sampler MD (K); default: every temperature of the "
        "explore stages",
    )
    n_steps: Annotated[int, Field(ge=1)] = Field(
        default=1000, description="MD steps per start x temperature after equilibration"
    )
    timestep_fs: PositiveFloat | None = Field(
        default=None, description="MD timestep (fs); default 0.5 with hydrogen, else 1"
    )
    equilibrate_fs: Annotated[float, Field(ge=0)] = Field(
        default=200.0, description="equilibration before the first frame is kept (fs)"
    )
    dump_fs: PositiveFloat = Field(default=10.0, description="one frame kept every dump_fs (fs)")
    conformers: bool = Field(
        default=False,
        description="also start from each rotatable bond's smaller side rotated by 120 and "
        "240 degrees (molecules; clashing starts dropped)",
    )
    n_yardstick: Annotated[int, Field(ge=0)] = Field(
        default=10,
        description="frames drawn at random from the sampler's trajectory (none of the "
        "chosen), labeled at init and kept as an independent yardstick (never trained on): "
        "every ensemble's error on them is reported, and a target error is checked on them",
    )
    seed: int = Field(default=0, description="seed of the sampler's momenta and noise")


class InitConfig(Section):
    """Initial data: randomly perturbed copies of the start structures, labeled before iteration 0,
    and/or labeled data the user already has (DP-GEN's ``init_data_sys``): extxyz (or any ase.io
    format with energies and forces) files, or DeePMD systems (a folder with type.raw and set.*/,
    read with dpdata); paths relative to the config file. They must be labeled at the level of
    theory of ``label``; they are checked (energy and forces present and finite) and counted
    apart from the labels the run computes."""

    n_perturbed: Annotated[int, Field(ge=0)] = Field(
        default=20,
        description="randomly perturbed copies of each start structure, labeled before "
        "iteration 0; 0: none (then data must be given)",
    )
    position_sigma_A: Annotated[float, Field(ge=0)] = Field(
        default=0.05,
        description="std of the Gaussian displacement of each Cartesian component (Angstrom)",
    )
    cell_strain: Annotated[float, Field(ge=0, lt=0.5)] = Field(
        default=0.03,
        description="fully periodic cells: a random symmetric strain, every component in "
        "[-cell_strain, cell_strain] (positions scaled with the cell)",
    )
    seed: int = Field(default=0, description="seed of the perturbations")
    data: list[str] = Field(
        default=[],
        description="labeled data you already have: extxyz (or any ase.io file with energies "
        "and forces) or DeePMD system folders, at the level of theory of label; frozen into "
        "data/user.extxyz and counted apart from the run's labels",
    )
    sampler: SamplerConfig = Field(
        default_factory=SamplerConfig, description="the cheap thermal sampler"
    )


class CVConfig(Section):
    """A collective variable: distance / angle / dihedral of atoms (0-based indices; Angstrom,
    radians), a coordination number between two groups (PLUMED's switching function with
    ``r0_A``, ``nn``, ``mm``), or any torch function of (positions, cell) given as
    ``package.module:function``."""

    kind: Literal["distance", "angle", "dihedral", "coordination", "torch"] = Field(
        description="what the CV measures"
    )
    atoms: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None,
        description="distance / angle / dihedral: 2 / 3 / 4 atom indices (0-based)",
    )
    group_a: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None, description="coordination: the first group of atom indices"
    )
    group_b: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None, description="coordination: the second group of atom indices"
    )
    r0_A: PositiveFloat | None = Field(
        default=None, description="coordination: r0 of the switching function (Angstrom)"
    )
    nn: PositiveInt = Field(
        default=6, description="coordination: exponent n of the switching function"
    )
    mm: PositiveInt = Field(
        default=12, description="coordination: exponent m of the switching function"
    )
    function: str | None = Field(
        default=None,
        description="torch: 'package.module:function', a function of (positions, cell) tensors "
        "(Angstrom) returning a scalar tensor",
    )
    periodic: bool = Field(
        default=False, description="torch: the CV wraps with period 2 pi (dihedrals always do)"
    )
    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_]+$",
        description="the CV's name in frames (cv_NAME) and plots; default: kind and atoms",
    )

    @model_validator(mode="after")
    def _check(self) -> CVConfig:
        n_atoms = {"distance": 2, "angle": 3, "dihedral": 4}.get(self.kind)
        if n_atoms is not None and (self.atoms is None or len(self.atoms) != n_atoms):
            raise ValueError(f"a {self.kind} CV needs atoms: {n_atoms} atom indices")
        if self.kind == "coordination" and not (self.group_a and self.group_b and self.r0_A):
            raise ValueError("a coordination CV needs group_a, group_b and r0_A")
        if self.kind == "torch" and (not self.function or ":" not in self.function):
            raise ValueError("a torch CV needs function: 'package.module:function'")
        return self


class MetadynamicsConfig(Section):
    """Well-tempered metadynamics on the ``cvs``: a Gaussian hill of ``height_eV`` and widths
    ``sigma`` (CV units) every ``pace_steps``, heights tempered by ``biasfactor`` (None: plain)."""

    kind: Literal["metadynamics"] = Field(default="metadynamics", description="the bias kind")
    cvs: list[CVConfig] = Field(min_length=1, description="the collective variables")
    sigma: list[PositiveFloat] = Field(
        min_length=1, description="Gaussian width per CV, in the CV's units (A, rad)"
    )
    height_eV: PositiveFloat = Field(default=0.02, description="height of a hill (eV)")
    pace_steps: PositiveInt = Field(default=50, description="MD steps between two hills")
    biasfactor: Annotated[float, Field(gt=1)] | None = Field(
        default=10.0, description="well-tempered bias factor; None: plain metadynamics"
    )

    @model_validator(mode="after")
    def _check(self) -> MetadynamicsConfig:
        if len(self.sigma) != len(self.cvs):
            raise ValueError(f"sigma has {len(self.sigma)} widths for {len(self.cvs)} cvs")
        return self


class UncertaintyBiasConfig(Section):
    """Uncertainty-biased MD: bias energy -strength x (std of the members' energies), pulling
    walkers towards where the ensemble disagrees (every member runs at every step of its
    stride)."""

    kind: Literal["uncertainty"] = Field(default="uncertainty", description="the bias kind")
    strength: PositiveFloat = Field(
        default=1.0,
        description="bias energy = -strength x (std of the members' energies); no floor, so "
        "keep the guards on",
    )
    stride_steps: PositiveInt = Field(
        default=1,
        description="apply the bias as an impulse every this many steps (its force x the "
        "stride), so the members run only then: multiple time stepping for a slow force",
    )


class PlumedConfig(Section):
    """A PLUMED input (its text, PLUMED's units: nm, kJ/mol, ps) run through PLUMED's kernel."""

    kind: Literal["plumed"] = Field(default="plumed", description="the bias kind")
    script: str = Field(
        min_length=1,
        description="the PLUMED input's text; needs a PLUMED kernel (PLUMED_KERNEL)",
    )


BiasConfig = Annotated[
    MetadynamicsConfig | UncertaintyBiasConfig | PlumedConfig, Field(discriminator="kind")
]


class StageConfig(Section):
    """A block of exploration conditions, run until converged or ``max_iterations``.

    Walkers: every start x temperature (x pressure for npt) x ``walkers_per_condition``. Starts
    (``starts``): the system's structures, files of their own, or frames of the previous
    iteration: the last frame of each walker (``last``) or its most uncertain accurate frames
    (``uncertain``), at most ``max_starts``. Trust levels and the candidate cap, when given
    here, override the ``examine`` section's for this stage. ``max_labels`` /
    ``max_dft_core_hours`` are the stage's budgets (labels and DFT core-hours of its
    iterations, test frames included): a stage that spends one ends like one that reaches
    ``max_iterations``. Budgets may be raised on resume.
    """

    temperatures_K: list[PositiveFloat] = Field(
        min_length=1, description="one condition per temperature (K)"
    )
    ensemble: Literal["nve", "nvt", "npt"] = Field(
        default="nvt", description="the MD ensemble; npt for periodic cells only"
    )
    thermostat: Literal["langevin", "bussi", "nose-hoover"] = Field(
        default="langevin",
        description="nvt: langevin (friction_per_fs), bussi or nose-hoover chains "
        "(thermostat_time_fs)",
    )
    barostat: Literal["mtk", "langevin"] = Field(
        default="mtk",
        description="npt: mtk (Nose-Hoover chains, ASE's MTKNPT) or langevin (Langevin-BAOAB)",
    )
    cell_fluctuation: Literal["isotropic", "anisotropic"] = Field(
        default="isotropic", description="npt: how the cell may change"
    )
    pressures_bar: list[float] | None = Field(
        default=None, description="npt: one condition per temperature x pressure (bar)"
    )
    temperature_ramp_to_K: PositiveFloat | None = Field(
        default=None, description="each walker's target goes linearly from its temperature to this"
    )
    n_steps: PositiveInt = Field(default=1000, description="MD steps of a walker per iteration")
    timestep_fs: PositiveFloat = Field(default=0.5, description="MD timestep (fs)")
    dump_interval: PositiveInt = Field(
        default=10, description="a frame is dumped (and examined) every this many steps"
    )
    friction_per_fs: PositiveFloat = Field(
        default=0.01, description="Langevin thermostat friction (1/fs)"
    )
    thermostat_time_fs: PositiveFloat = Field(
        default=100.0, description="bussi and nose-hoover thermostat time constant (fs)"
    )
    barostat_time_fs: PositiveFloat = Field(
        default=1000.0, description="barostat time constant (fs)"
    )
    walkers_per_condition: PositiveInt = Field(
        default=1, description="walkers per start and condition (each with its own seed)"
    )
    starts: Literal["system", "last", "uncertain", "sampler"] | list[str] = Field(
        default="system",
        description="system: the system's structures; last: the last frame of every walker of "
        "the previous iteration; uncertain: the previous iteration's accurate frames with the "
        "highest deviation; sampler: the thermal sampler's chosen frames (init.sampler), "
        "max_starts of them (default: as many as the system's structures), the next ones at "
        "each iteration (streaming: each stage), so walkers start from every conformer in "
        "turn; or a list of files (frozen into starts/stage-K.extxyz)",
    )
    max_starts: PositiveInt | None = Field(
        default=None, description="at most this many starts; None: all"
    )
    biases: list[BiasConfig] = Field(
        default=[], description="biases on the walkers (metadynamics, uncertainty, plumed)"
    )
    max_iterations: PositiveInt = Field(
        default=5, description="the stage ends after this many iterations if not converged"
    )
    trust_lo_eV_per_A: PositiveFloat | None = Field(
        default=None, description="overrides examine.trust_lo_eV_per_A for this stage"
    )
    trust_hi_eV_per_A: PositiveFloat | None = Field(
        default=None, description="overrides examine.trust_hi_eV_per_A for this stage"
    )
    max_candidates: PositiveInt | None = Field(
        default=None, description="overrides examine.max_candidates for this stage"
    )
    max_labels: PositiveInt | None = Field(
        default=None,
        description="the stage's label budget (its iterations' labels, test frames included); "
        "may be raised on resume",
    )
    max_dft_core_hours: PositiveFloat | None = Field(
        default=None,
        description="the stage's DFT core-hour budget; may be raised on resume",
    )

    @model_validator(mode="after")
    def _check(self) -> StageConfig:
        if self.ensemble == "npt" and not self.pressures_bar:
            raise ValueError("ensemble 'npt' needs pressures_bar")
        if self.ensemble != "npt" and self.pressures_bar:
            raise ValueError(f"pressures_bar needs ensemble 'npt', not {self.ensemble!r}")
        coupling = self.barostat if self.ensemble == "npt" else self.thermostat
        if self.temperature_ramp_to_K is not None and (self.ensemble, coupling) not in RAMPABLE:
            raise ValueError(
                "temperature_ramp_to_K needs nvt with thermostat langevin or bussi, or npt "
                f"with barostat langevin (not {self.ensemble} with {coupling})"
            )
        if isinstance(self.starts, list) and not self.starts:
            raise ValueError(
                "starts: give 'system', 'last', 'uncertain', 'sampler' or a list of files"
            )
        if sum(b.kind == "plumed" for b in self.biases) > 1:
            raise ValueError("biases: at most one plumed bias")
        return self

    def conditions(self) -> list[tuple[float, float | None]]:
        """(temperature_K, pressure_bar or None) of every condition, temperatures outermost."""
        return [(t, p) for t in self.temperatures_K for p in (self.pressures_bar or [None])]


class ExploreConfig(Section):
    stages: list[StageConfig] = Field(
        min_length=1, description="run one after the other, each until converged"
    )
    seed: int = Field(default=0, description="seed of the walkers' velocities and thermostats")
    forces_from: Literal["first", "mean"] = Field(
        default="first",
        description="what drives the MD: member 0, with every member evaluated only at dump "
        "steps (DeePMD's model deviation; the ensemble costs one evaluation per dump), or the "
        "members' mean at every step",
    )
    stop_after_failed_dumps: PositiveInt = Field(
        default=20, description="a walker stops after this many dumps in a row above trust_hi"
    )
    min_distance_fraction: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.5,
        description="a walker stops when two atoms come closer than this x covalent radii sum",
    )
    max_volume_ratio: float = Field(
        default=2.0,
        description="a periodic walker stops when its cell volume grows or shrinks by more than "
        "this factor from its start; 0: off",
    )
    max_temperature_factor: Annotated[float, Field(gt=1)] | None = Field(
        default=2.0,
        description="a walker stops when its kinetic temperature, a running mean over 100 MD "
        "steps, exceeds this x its thermostat's target (K/K); judged only for walkers with at "
        "least 30 degrees of freedom; None: off",
    )
    max_restarts: Annotated[int, Field(ge=0)] = Field(
        default=2,
        description="a walker stopped by a guard starts again from its last good frame with new "
        "velocities and seed, up to this many times",
    )
    restart_timestep_factor: Annotated[float, Field(gt=0, le=1)] = Field(
        default=1.0, description="each restart multiplies the walker's timestep by this"
    )
    plot_walkers: bool = Field(
        default=True, description="a plot of deviation (and CVs) over time per walker"
    )
    max_bond_fraction: float = Field(
        default=2.0,
        description="a walker stops when an atom has no other atom within this x covalent radii "
        "sum (a fragment flying off, which the deviation cannot see beyond rcut); 0: off",
    )

    @field_validator("max_bond_fraction")
    @classmethod
    def _bond_fraction(cls, value: float) -> float:
        if value != 0 and value < 1:
            raise ValueError(f"must be 0 (off) or >= 1, got {value}")
        return value


class ExamineConfig(Section):
    """Trust levels on the max force deviation (eV/Angstrom), the selection caps, the held-out
    test frames and the convergence criterion."""

    trust_lo_eV_per_A: PositiveFloat = Field(
        default=0.05,
        description="frames with a max force deviation below this are accurate (eV/A)",
    )
    trust_hi_eV_per_A: PositiveFloat = Field(
        default=0.25,
        description="frames above this are failed; between the two, candidates (eV/A)",
    )
    deviation: Literal["absolute", "relative"] = Field(
        default="absolute",
        description="what the trust levels apply to: the max force deviation (eV/A), or DeePMD's "
        "relative one, max over atoms of deviation / (|F| + relative_eps_eV_per_A), with the "
        "dimensionless trust_lo_relative / trust_hi_relative",
    )
    relative_eps_eV_per_A: PositiveFloat = Field(
        default=1.0, description="deviation relative: added to |F| in the denominator (eV/A)"
    )
    trust_lo_relative: PositiveFloat = Field(
        default=0.03, description="deviation relative: the lower trust level (dimensionless)"
    )
    trust_hi_relative: PositiveFloat = Field(
        default=0.15, description="deviation relative: the upper trust level (dimensionless)"
    )
    trust_levels: Literal["fixed", "calibrated", "adaptive"] = Field(
        default="fixed",
        description="fixed: as configured (per stage if a stage says so); calibrated: each "
        "iteration's trust_lo is where the previous calibration's fitted true error crosses "
        "target_force_error_eV_per_A (within trust_lo_bounds_eV_per_A), trust_hi = "
        "trust_hi_factor x trust_lo; adaptive: trust_lo set so that adaptive_n_candidates (or "
        "adaptive_fraction) of the frames below trust_hi are candidates (DPGEN2's adaptive lower)",
    )
    trust_lo_bounds_eV_per_A: tuple[PositiveFloat, PositiveFloat] = Field(
        default=(0.02, 0.5), description="calibrated: trust_lo stays within these (eV/A)"
    )
    trust_hi_factor: Annotated[float, Field(gt=1)] = Field(
        default=4.0, description="calibrated: trust_hi = trust_hi_factor x trust_lo"
    )
    adaptive_n_candidates: PositiveInt | None = Field(
        default=None,
        description="adaptive: this many of the frames below trust_hi are candidates",
    )
    adaptive_fraction: Annotated[float, Field(gt=0, le=1)] | None = Field(
        default=None,
        description="adaptive: this share of the frames below trust_hi are candidates",
    )
    max_candidates: PositiveInt = Field(
        default=10, description="at most this many candidates labeled per iteration"
    )
    edge_frames: bool = Field(
        default=True,
        description="when an examination finds fewer candidates than max_candidates, fill up "
        "with edge frames: per walker trajectory, the last frame below trust_hi before the "
        "deviation first crosses it (the first failed frame when it starts above), chosen as "
        "the selection chooses candidates",
    )
    selection: Literal["random", "diverse", "representative"] = Field(
        default="diverse",
        description="random: uniform without replacement (DP-GEN); diverse: farthest-point "
        "sampling on a structure fingerprint, from the candidate with the highest deviation; "
        "representative: k-means on that fingerprint, the candidate nearest each centre",
    )
    test_frames: Annotated[int, Field(ge=0)] = Field(
        default=4,
        description="frames drawn uniformly at random from each iteration's explored frames, "
        "labeled and held out (never trained on) to measure the true error; 0: off",
    )
    target_force_error_eV_per_A: PositiveFloat | None = Field(
        default=None,
        description="the force error the run aims at: where the calibration finds the true max "
        "atomic force error crossing it; a stage converges once the new ensemble's test force "
        "RMSE (and its yardstick force RMSE, with a yardstick) is at or below it",
    )
    yardstick_data: list[str] = Field(
        default=[],
        description="the independent yardstick: labeled frames that no model of the run chose "
        "(e.g. from your own MD, a torsion scan, a reference set), at the level of theory of "
        "label, in any ase.io file with energies and forces or a DeePMD system folder; every "
        "ensemble is measured on them and never trains on them (frozen into "
        "data/yardstick.extxyz)",
    )
    converged_accurate_ratio: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.99, description="the accurate ratio at which a stage converges"
    )
    converged_n_iterations: PositiveInt = Field(
        default=1,
        description="a stage converges when its accurate ratio reaches converged_accurate_ratio "
        "in this many consecutive iterations",
    )
    seed: int = Field(default=0, description="seed of the selection and the test-frame draw")

    @model_validator(mode="after")
    def _lo_below_hi(self) -> ExamineConfig:
        if self.trust_lo_eV_per_A >= self.trust_hi_eV_per_A:
            raise ValueError(
                f"trust_lo_eV_per_A ({self.trust_lo_eV_per_A}) must be below "
                f"trust_hi_eV_per_A ({self.trust_hi_eV_per_A})"
            )
        if self.trust_lo_relative >= self.trust_hi_relative:
            raise ValueError(
                f"trust_lo_relative ({self.trust_lo_relative}) must be below "
                f"trust_hi_relative ({self.trust_hi_relative})"
            )
        if self.deviation == "relative" and self.trust_levels == "calibrated":
            raise ValueError(
                "trust_levels 'calibrated' sets absolute levels (eV/A); use deviation 'absolute'"
            )
        lo, hi = self.trust_lo_bounds_eV_per_A
        if lo > hi:
            raise ValueError(
                f"trust_lo_bounds_eV_per_A ({lo}, {hi}): the first must not exceed the second"
            )
        if self.trust_levels == "calibrated" and self.target_force_error_eV_per_A is None:
            raise ValueError("trust_levels 'calibrated' needs target_force_error_eV_per_A")
        if self.trust_levels == "adaptive" and (
            (self.adaptive_n_candidates is None) == (self.adaptive_fraction is None)
        ):
            raise ValueError(
                "trust_levels 'adaptive' needs exactly one of adaptive_n_candidates and "
                "adaptive_fraction"
            )
        return self


class LabelPolicy(Section):
    """How labeling may fail, for every labeler; not part of the science (may change on resume)."""

    max_failed_fraction: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.5,
        description="the run stops, with one line and every finished label kept, when more than "
        "this share of an iteration's labels fail",
    )
    timeout_s: PositiveFloat | None = Field(
        default=None, description="a DFT job still in its SCF after this long is given up"
    )
    store: str | None = Field(
        default=None,
        description="a label store shared between runs (a folder, relative to the config file): "
        "a label of the same frame and method is computed once for all of them; default: the "
        "run directory's labels/",
    )


LABEL_POLICY = tuple(LabelPolicy.model_fields)


class PySCFLabelConfig(LabelPolicy):
    kind: Literal["pyscf"] = Field(default="pyscf", description="the labeler kind")
    xc: str = Field(default="pbe", description="the exchange-correlation functional")
    basis: str = Field(default="def2-svp", description="the basis set")
    charge: int = Field(default=0, description="total charge (e)")
    spin: Annotated[int, Field(ge=0)] = Field(default=0, description="2S = N_alpha - N_beta")
    conv_tol: PositiveFloat = Field(default=1e-9, description="SCF energy convergence (Hartree)")
    max_cycle: PositiveInt = Field(default=100, description="SCF cycles of the first attempt")
    grid_level: Annotated[int, Field(ge=0, le=9)] = Field(
        default=3, description="PySCF's integration grid level"
    )
    density_fit: bool = Field(default=False, description="density fitting of the integrals")
    dispersion: Literal["d3bj", "d3zero", "d3bjm", "d3zerom", "d4"] | None = Field(
        default=None,
        description="an empirical dispersion correction on top of xc, in energies and forces "
        "(pyscf-dispersion); part of what a label is",
    )
    device: Literal["auto", "cpu", "gpu"] = Field(
        default="auto",
        description="gpu: gpu4pyscf (error if missing); auto: a GPU when available; not part "
        "of what a label is",
    )
    scf_fallbacks: bool = Field(
        default=True,
        description="an SCF that does not converge is tried again: more cycles with damping and "
        "a level shift, a second-order solver, a fresh atomic guess (every attempt recorded)",
    )


class XTBLabelConfig(LabelPolicy):
    """GFN-xTB through tblite: GFN2-xTB for molecules, GFN1-xTB for periodic cells."""

    kind: Literal["xtb"] = Field(default="xtb", description="the labeler kind")
    method: Literal["GFN2-xTB", "GFN1-xTB", "IPEA1-xTB"] = Field(
        default="GFN2-xTB", description="the tblite method"
    )
    charge: int = Field(default=0, description="total charge (e)")
    spin: Annotated[int, Field(ge=0)] = Field(default=0, description="2S, unpaired electrons")
    accuracy: PositiveFloat = Field(default=1.0, description="tblite's accuracy (lower is tighter)")
    electronic_temperature_K: PositiveFloat = Field(
        default=300.0, description="Fermi smearing temperature (K)"
    )
    max_iterations: PositiveInt = Field(
        default=250,
        description="an SCC not converged in this many iterations is a failure, never a label",
    )


class EMTLabelConfig(LabelPolicy):
    """ASE's EMT potential: a cheap reference for tests and demos (Al, Cu, Ag, Au, Ni, Pd, Pt; H, C, N, O roughly)."""

    kind: Literal["emt"] = Field(default="emt", description="the labeler kind")


LabelConfig = Annotated[
    PySCFLabelConfig | XTBLabelConfig | EMTLabelConfig, Field(discriminator="kind")
]


class ModelConfig(Section):
    """DeepPot-SE (se_e2_a) hyper-parameters (the model family when ``kind`` is absent)."""

    kind: Literal["deeppot"] = Field(default="deeppot", description="the model family")
    rcut_A: PositiveFloat = Field(
        default=6.0, description="cutoff radius (A): farther atoms do not interact"
    )
    rcut_smth_A: Annotated[float, Field(ge=0)] = Field(
        default=0.5,
        description="where the switching function starts to bring 1/r to 0 at rcut_A (A)",
    )
    embedding_widths: list[PositiveInt] = Field(
        default=[25, 50, 100],
        min_length=1,
        description="hidden widths of each element pair's embedding net",
    )
    axis_neuron: PositiveInt = Field(
        default=16,
        description="embedding columns of the descriptor's second factor (DeePMD's axis_neuron)",
    )
    fitting_widths: list[PositiveInt] = Field(
        default=[240, 240, 240],
        min_length=1,
        description="hidden widths of each element's fitting net",
    )
    precision: Literal["float32", "float64"] = Field(
        default="float64",
        description="precision of the saved members (MD and evaluation run in it)",
    )

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.rcut_smth_A >= self.rcut_A:
            raise ValueError(
                f"rcut_smth_A ({self.rcut_smth_A}) must be below rcut_A ({self.rcut_A})"
            )
        if self.axis_neuron > self.embedding_widths[-1]:
            raise ValueError(
                f"axis_neuron ({self.axis_neuron}) must not exceed the last embedding width "
                f"({self.embedding_widths[-1]})"
            )
        return self


class MaceModelConfig(Section):
    """A MACE model through mace-torch (ScaleShiftMACE), with its own training knobs: each member
    trains alone (Adam with AMSGrad at ``lr``, an exponential moving average of the weights,
    mace-torch's per-atom energy and force loss). Defaults measured for a 2-core CPU."""

    kind: Literal["mace"] = Field(default="mace", description="the model family")
    channels: PositiveInt = Field(
        default=32, description="channels of each hidden irrep (mace-torch's num_channels)"
    )
    max_L: Annotated[int, Field(ge=0, le=3)] = Field(
        default=1,
        description="highest rotation order of the hidden features (0: invariant only, 1: "
        "vectors too; mace-torch's max_L)",
    )
    max_ell: Annotated[int, Field(ge=1, le=4)] = Field(
        default=3, description="highest order of the edges' spherical harmonics"
    )
    correlation: Annotated[int, Field(ge=1, le=4)] = Field(
        default=3, description="body order of each message minus one (mace-torch's correlation)"
    )
    r_max_A: PositiveFloat = Field(
        default=5.0, description="cutoff radius (A): farther atoms do not interact"
    )
    num_interactions: Annotated[int, Field(ge=1, le=4)] = Field(
        default=2, description="message-passing layers (receptive field num_interactions x r_max_A)"
    )
    num_radial_basis: PositiveInt = Field(
        default=8, description="Bessel functions of the radial embedding"
    )
    num_cutoff_basis: PositiveInt = Field(
        default=5, description="order of the polynomial envelope that brings edges to 0 at r_max_A"
    )
    radial_MLP: list[PositiveInt] = Field(
        default=[64, 64, 64],
        min_length=1,
        description="hidden widths of the MLP from radial features to tensor-product weights",
    )
    E0s: Literal["average"] | dict[str, float] = Field(
        default="average",
        description="isolated-atom energies (eV) per element: 'average' fits them by least "
        "squares to the training frames' energies; or a mapping element -> eV. Recorded with "
        "each member",
    )
    # measured: a member trained on 50 ethanol frames, NVE 2000 x 0.5 fs at 300 K: energy
    # drift 0.008 meV/atom/ps in float32 and in float64, 28 against 35 ms per step
    precision: Literal["float32", "float64"] = Field(
        default="float32",
        description="precision of the saved members (MD and evaluation run in it; float32 "
        "conserves energy as float64 does, measured); training runs in train.precision",
    )
    lr: PositiveFloat = Field(default=0.01, description="learning rate (Adam with AMSGrad)")
    # measured: member 0 of 50 ethanol frames fine-tuned on 100 for 500 steps, test force RMSE
    # 33.2 -> 26.3 meV/A at 0.01, 25.9 at 0.005, 26.7 at 0.002 (one seed: about equal)
    warm_lr: PositiveFloat = Field(
        default=0.005, description="learning rate of a warm-started (fine-tuning) training"
    )
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.99,
        description="decay of the exponential moving average of the weights that is validated "
        "and saved (0: the raw weights)",
    )
    energy_weight: Annotated[float, Field(ge=0)] = Field(
        default=1.0, description="weight of the per-atom energy error (eV/atom)^2 in the loss"
    )
    forces_weight: Annotated[float, Field(ge=0)] = Field(
        default=100.0, description="weight of the force error (eV/A)^2 in the loss"
    )
    batch_size: PositiveInt = Field(default=5, description="frames per optimisation step")
    steps: PositiveInt = Field(
        default=2000, description="optimisation steps of a training from scratch"
    )
    warm_steps: PositiveInt = Field(
        default=500,
        description="optimisation steps of a warm-started training (from the previous "
        "ensemble's member, or from base_model)",
    )
    base_model: str | None = Field(
        default=None,
        description="a MACE model file (mace-torch's whole-module format, e.g. a foundation "
        "model on disk) that every member of a first training fine-tunes from, for warm_steps "
        "at warm_lr; its architecture replaces the fields above",
    )

    @field_validator("E0s", mode="before")
    @classmethod
    def _e0s(cls, value: object) -> object:
        # one message instead of one per member of the union
        if isinstance(value, dict):
            for element, energy in value.items():
                if isinstance(energy, bool) or not isinstance(energy, int | float):
                    raise ValueError(f"{element}: got {energy!r}; expected a number (eV)")
        elif value != "average":
            raise ValueError(f"got {value!r}; expected 'average' or a mapping element -> eV")
        return value

    @model_validator(mode="after")
    def _check(self) -> MaceModelConfig:
        if self.energy_weight == 0 and self.forces_weight == 0:
            raise ValueError("energy_weight and forces_weight are both 0: nothing to train on")
        return self


def _model_kind(value: object) -> str:
    """The model family of a ``train.model`` section: its ``kind``, DeepPot-SE without one."""
    if isinstance(value, dict):
        return value.get("kind", "deeppot")
    return getattr(value, "kind", "deeppot")


ModelSection = Annotated[
    Annotated[ModelConfig, Tag("deeppot")] | Annotated[MaceModelConfig, Tag("mace")],
    Discriminator(_model_kind),
]


class TrainConfig(Section):
    """Ensemble training: Adam, exponential learning-rate decay, DeePMD-style loss prefactors."""

    ensemble_size: Annotated[int, Field(ge=2)] = Field(
        default=4, description="members of the ensemble (their spread is the deviation)"
    )
    model: ModelSection = Field(
        default=ModelConfig(),
        description="the model family (kind: deeppot, the default; or mace) and its "
        "hyper-parameters",
    )
    steps: PositiveInt = Field(
        default=5000, description="optimisation steps of a training from scratch (warm: warm_steps)"
    )
    batch_size: PositiveInt | Annotated[str, Field(pattern=r"^auto(:[1-9][0-9]*)?$")] = Field(
        default="auto:256",
        description="frames per step, or DeePMD's 'auto:N': enough frames for N atoms "
        "('auto' = 'auto:32')",
    )
    precision: Literal["float32", "float64"] = Field(
        default="float32",
        description="arithmetic while training (float32: ~2x faster on CPU, same accuracy "
        "measured); the saved members are cast to model.precision",
    )
    # measured on ethanol (150 frames, 3000 steps, test force RMSE): batch 4 at 5e-4 260 meV/A,
    # ~29 frames (auto:256) at 2e-3 157, 5e-3 141 (stop_lr 1e-4: 130), 1e-2 376 (unstable)
    start_lr: PositiveFloat = Field(
        default=3e-3, description="learning rate at the first step; decays exponentially to stop_lr"
    )
    stop_lr: PositiveFloat = Field(default=1e-4, description="learning rate at the last step")
    start_pref_e: Annotated[float, Field(ge=0)] = Field(
        default=0.02,
        description="energy loss prefactor at start_lr (DeePMD's; follows the rate to limit_pref_e)",
    )
    limit_pref_e: Annotated[float, Field(ge=0)] = Field(
        default=1.0, description="energy loss prefactor as the learning rate reaches 0"
    )
    start_pref_f: Annotated[float, Field(ge=0)] = Field(
        default=1000.0, description="force loss prefactor at start_lr"
    )
    limit_pref_f: Annotated[float, Field(ge=0)] = Field(
        default=1.0, description="force loss prefactor as the learning rate reaches 0"
    )
    start_pref_v: Annotated[float, Field(ge=0)] = Field(
        default=0.0, description="virial loss prefactor at start_lr (cells with stress labels)"
    )
    limit_pref_v: Annotated[float, Field(ge=0)] = Field(
        default=0.0, description="virial loss prefactor as the learning rate reaches 0"
    )
    validation_fraction: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.1, description="share of each member's frames held out for its validation errors"
    )
    warm_start: Literal["always", "never", "auto"] = Field(
        default="always",
        description="train from the previous ensemble's members (warm_steps at warm_start_lr); "
        "'auto': only when the new frames are not more than the old",
    )
    warm_steps: PositiveInt = Field(default=2000, description="steps of a warm-started training")
    warm_start_lr: PositiveFloat = Field(
        default=1e-3, description="learning rate at the first step of a warm-started training"
    )
    seed: int = Field(default=0, description="seed of the members' weights and data orders")
    stacks: PositiveInt | Literal["auto"] = Field(
        default="auto",
        description="the members train together as stacks (one forward, backward and "
        "optimizer step for all members of a stack; each keeps its seed, data order, "
        "validation errors and checkpoint), split into this many stacks, one job each; "
        "'auto': one per worker thread of a Dask cluster (at most one per member), one on a "
        "thread pool. One stack trains all members on one device (a GPU worker)",
    )
    patience_steps: Annotated[int, Field(ge=0)] = Field(
        default=0,
        description="stop a member once its validation force RMSE has not improved by 1% for "
        "this many steps (checked every steps/100 steps; 0: off; needs validation frames); "
        "steps and warm_steps stay the upper bounds",
    )
    patience_anneal_fraction: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.1,
        description="a member that patience stops first anneals: its learning rate goes from "
        "where it is to stop_lr over this fraction of its steps (or warm_steps), then it stops; "
        "0: it stops at once",
    )

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data: object) -> object:
        # not a ValueError: pydantic would prefix it with the section; one line as it stands.
        # "stacked" (the old default, frozen in older runs' eelt.yaml) is what every run does
        # now, so such a run resumes as it was.
        if isinstance(data, dict) and "mode" in data:
            if data["mode"] == "stacked":
                return {k: v for k, v in data.items() if k != "mode"}
            raise EeltError("train.mode was removed: members always train as stacks (train.stacks)")
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.stop_lr > self.start_lr:
            raise ValueError(f"stop_lr ({self.stop_lr}) must not exceed start_lr ({self.start_lr})")
        return self


class ExecutionConfig(Section):
    """Where jobs run: a local Dask cluster, a thread pool, or a batch scheduler via dask-jobqueue."""

    kind: Literal["local", "threads", "dask", "slurm", "pbs", "sge", "lsf"] = Field(
        default="local",
        description="local: a local Dask cluster; threads: a thread pool; dask: a running "
        "scheduler; slurm, pbs, sge, lsf: batch jobs submitted by dask-jobqueue",
    )
    scheduler_address: str | None = Field(
        default=None,
        description="kind 'dask': the address of a running Dask scheduler (tcp://host:8786), "
        "whose workers (started by hand, by compose or by a batch system) run the jobs",
    )
    n_workers: PositiveInt = Field(
        default=2, description="Dask workers (local processes, or fixed batch jobs)"
    )
    threads_per_worker: PositiveInt = Field(default=1, description="jobs a worker runs at once")
    memory_per_worker: str = Field(
        default="4GiB",
        description="a worker's memory; PySCF's max_memory per job is 80% of its share",
    )
    host: str = Field(default="127.0.0.1", description="address the Dask scheduler listens on")
    dashboard_address: str | None = Field(default="127.0.0.1:0", description="None: no dashboard")
    # batch-scheduler options (dask-jobqueue), ignored for local/threads
    queue: str | None = Field(default=None, description="batch schedulers: the queue or partition")
    account: str | None = Field(
        default=None, description="batch schedulers: the account (LSF and SGE: the project, -P)"
    )
    walltime: str = Field(
        default="01:00:00", description="batch schedulers: a worker job's walltime"
    )
    job_extra_directives: list[str] = Field(
        default=[], description="batch schedulers: extra lines of the job script's header"
    )
    job_script_prologue: list[str] = Field(
        default=[],
        description="batch schedulers: commands run before the worker starts (module load, "
        "source a venv)",
    )
    python: str | None = Field(
        default=None,
        description="batch schedulers: the command that runs a worker's Python (default: this "
        "interpreter), e.g. 'apptainer exec --bind /scratch eelt.sif python'",
    )
    gpus_per_worker: Annotated[int, Field(ge=0)] = Field(
        default=0, description="GPUs a worker job asks its scheduler for"
    )
    jobs_per_gpu: PositiveInt = Field(
        default=1,
        description="DFT jobs that share one GPU at once: a worker advertises gpus_per_worker x "
        "jobs_per_gpu GPU slots, and each GPU label job takes one",
    )
    min_jobs: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="batch schedulers: with max_jobs, Dask scales the worker jobs adaptively "
        "between the two (instead of n_workers fixed jobs)",
    )
    max_jobs: PositiveInt | None = Field(
        default=None, description="batch schedulers: the upper bound of adaptive scaling"
    )
    threads_per_job: PositiveInt = Field(
        default=1,
        description="OpenMP/BLAS threads of each DFT job; a batch worker requests "
        "threads_per_worker x threads_per_job cores",
    )

    @model_validator(mode="after")
    def _jobs(self) -> ExecutionConfig:
        if self.kind == "dask" and not self.scheduler_address:
            raise ValueError("execution: kind 'dask' needs scheduler_address")
        if (self.min_jobs is None) != (self.max_jobs is None):
            raise ValueError("execution: give both min_jobs and max_jobs, or neither")
        if self.max_jobs is not None and self.min_jobs > self.max_jobs:
            raise ValueError(
                f"execution: min_jobs ({self.min_jobs}) must not exceed max_jobs ({self.max_jobs})"
            )
        return self


class LoopConfig(Section):
    """When the run stops, besides convergence: iterations, budgets, a stalled test error.

    Budgets count the run's labels (initial ones and test frames included) and the DFT
    core-hours of the label jobs it computed (each job's wall time x threads). A run that
    spends a budget ends ``budget_exhausted``; raising the budget and running again resumes it.
    """

    max_iterations: PositiveInt = Field(
        default=10,
        description="the run ends, in state max_iterations, after this many iterations "
        "(streaming: generations)",
    )
    max_labels: PositiveInt | None = Field(
        default=None,
        description="label budget of the run (initial labels and test frames included)",
    )
    max_dft_core_hours: PositiveFloat | None = Field(
        default=None, description="DFT core-hour budget of the run (job wall time x threads)"
    )
    stall_iterations: PositiveInt | None = Field(
        default=3,
        description="the run ends 'stalled' when, over this many iterations (streaming: "
        "generations), the accurate ratio stayed below stall_accurate_ratio and the new "
        "ensemble's test force RMSE improved by no more than stall_min_improvement (a "
        "fraction); None: off",
    )
    stall_accurate_ratio: Annotated[float, Field(gt=0, le=1)] | None = Field(
        default=0.05,
        description="see stall_iterations: a run stalls only while the accurate ratio of each "
        "of those iterations stays below this; None: the test force RMSE alone decides",
    )
    stall_min_improvement: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.05,
        description="the smallest improvement of the test force RMSE (a fraction) that is not a "
        "stall; see stall_iterations",
    )
    mode: Literal["synchronous", "streaming"] = Field(
        default="synchronous",
        description="synchronous: one iteration after another (explore, examine, label, train); "
        "streaming: walkers, DFT jobs and training overlap (eelt.orchestration.streaming): walker segments are "
        "examined as they end, a generation trains once generation_labels new labels arrived, "
        "and max_iterations counts generations",
    )
    segment_steps: PositiveInt = Field(
        default=200,
        description="streaming: MD steps of one walker segment (each segment starts from the "
        "walker's last frame with fresh velocities and is examined as soon as it ends)",
    )
    generation_labels: PositiveInt = Field(
        default=20,
        description="streaming: new training labels (candidates; test frames not counted) that "
        "start a training generation",
    )
    window_segments: PositiveInt = Field(
        default=8,
        description="streaming: the candidate cap (max_candidates), the diversity of the "
        "selection and the accurate-ratio convergence hold over this many consecutive walker "
        "segments",
    )


STAGE_BUDGETS = ("max_labels", "max_dft_core_hours")


class RunConfig(Section):
    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$", description="the run's name: runs/NAME and the flow run's"
    )
    system: SystemConfig = Field(description="the start structures and the type map")
    init: InitConfig = Field(default=InitConfig(), description="the initial data")
    explore: ExploreConfig = Field(description="what the walkers do")
    examine: ExamineConfig = Field(
        default=ExamineConfig(), description="trust levels, selection, test frames, convergence"
    )
    label: LabelConfig = Field(description="the labeler (kind: pyscf, xtb or emt)")
    train: TrainConfig = Field(default=TrainConfig(), description="the ensemble's training")
    execution: ExecutionConfig = Field(
        default=ExecutionConfig(), description="where jobs run (may change on resume)"
    )
    loop: LoopConfig = Field(
        default=LoopConfig(), description="when the run stops; the schedule (may change on resume)"
    )

    @model_validator(mode="after")
    def _stage_levels(self) -> RunConfig:
        if self.init.n_perturbed == 0 and not self.init.data and self.init.sampler.kind == "none":
            raise ValueError(
                "init: n_perturbed is 0, init.sampler.kind is none and no init.data is given: "
                "no initial data"
            )
        for k, stage in enumerate(self.explore.stages):
            if stage.starts == "sampler" and self.init.sampler.kind == "none":
                raise ValueError(
                    f"explore.stages.{k}: starts 'sampler' needs the thermal sampler "
                    "(init.sampler.kind xtb or emt)"
                )
            lo = stage.trust_lo_eV_per_A or self.examine.trust_lo_eV_per_A
            hi = stage.trust_hi_eV_per_A or self.examine.trust_hi_eV_per_A
            if lo >= hi:
                raise ValueError(
                    f"explore.stages.{k}: trust_lo_eV_per_A ({lo}) must be below "
                    f"trust_hi_eV_per_A ({hi}) (a stage's levels override examine's)"
                )
        return self

    def science(self) -> dict:
        """The part of the config a resumed run must not change (everything but execution)."""
        science = self.model_dump(mode="json", exclude={"execution", "loop"})
        del science["system"]["structures"]  # paths; the run compares the structures themselves
        for stage in science["explore"]["stages"]:
            for budget in STAGE_BUDGETS:  # budgets may be raised on resume
                del stage[budget]
        for key in LABEL_POLICY:  # how failures are handled, not what a label is
            science["label"].pop(key, None)
        return science


class ConfigError(EeltError, ValueError):
    """A config that cannot be used; the message is one line per problem, naming the field."""


UNION_TAGS = ("pyscf", "xtb", "emt", "metadynamics", "uncertainty", "plumed", "deeppot", "mace")


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        # drop the union tag pydantic inserts into the location (label.pyscf.xc -> label.xc)
        loc = [p for p in e["loc"] if p not in UNION_TAGS]
        where = ".".join(str(p) for p in loc) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "literal_error":
            msg = f"got {e.get('input')!r}; {msg.lower()}"
        elif e["type"] == "union_tag_invalid":
            ctx = e.get("ctx", {})
            msg = f"kind {ctx.get('tag')!r} is not one of {ctx.get('expected_tags')}"
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        # a model-level check names its field in the message itself
        lines.append(msg if not loc and e["type"] == "value_error" else f"{where}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict, source: str = "config") -> RunConfig:
    """Validate a config dict; raise ConfigError naming every bad field."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None


def load_config(path: str | Path) -> tuple[RunConfig, Path]:
    """Read a YAML config; return it and the directory its relative paths refer to."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return parse_config(data, str(path)), path.parent.resolve()


def parse_section(model: type[Section], data: dict, name: str) -> Section:
    """Validate one section (e.g. ``train``) on its own, errors prefixed with its name."""
    try:
        return model.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(
            "\n".join(f"{name}.{line}" for line in _describe(err).splitlines())
        ) from None
