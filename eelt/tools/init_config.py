"""A first config for a structure (``eelt init``): commented YAML sized for a laptop (2 cores,
minutes per iteration for a small molecule), from the examples' measured settings.

A molecule gets two NVT stages (300/500 K, then 600/800 K) and PySCF PBE/def2-SVP labels; a
periodic cell one NVT stage (no NPT: the cell stays as given), strained initial copies and the
settings of the periodic Cu example, labeled with GFN1-xTB unless told otherwise (PySCF labels
molecules only). EMT is offered only when it has parameters for every element.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
import yaml
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers

from eelt.errors import EeltError

LABELERS = ("pyscf", "xtb", "emt")
MODELS = ("deeppot", "mace")
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"  # RunConfig.name


@dataclass(frozen=True)
class StructureFacts:
    """What the config is sized from: the structure's frames, elements and cell."""

    n_frames: int
    n_atoms: int  # of the first frame
    elements: list[str]  # by atomic number
    periodic: bool  # periodic in every direction
    partly_periodic: bool  # periodic in some direction but not all
    n_electrons: int  # of the first frame, neutral
    max_distance_A: float  # largest interatomic distance of the first frame (minimum image)
    formula: str
    cell_lengths_A: tuple[float, float, float]

    @property
    def has_hydrogen(self) -> bool:
        return "H" in self.elements

    @property
    def lightest_mass(self) -> float:
        return min(atomic_masses[atomic_numbers[s]] for s in self.elements)


def read_facts(structure: Path) -> StructureFacts:
    """Read every frame of ``structure`` (any ase.io format) and describe the first."""
    if not structure.is_file():
        raise EeltError(f"{structure}: no such structure file")
    try:
        frames = ase.io.read(structure, ":")
    except Exception as err:  # ase.io raises many kinds for unreadable files
        raise EeltError(f"{structure}: cannot read ({type(err).__name__}: {err})") from None
    if not frames or len(frames[0]) == 0:
        raise EeltError(f"{structure}: holds no atoms")
    first: Atoms = frames[0]
    symbols = {s for a in frames for s in a.get_chemical_symbols()}
    pbc = first.pbc
    if pbc.all() and first.cell.volume <= 0:
        raise EeltError(f"{structure}: periodic but its cell is not three-dimensional")
    distances = first.get_all_distances(mic=bool(pbc.any())) if len(first) > 1 else np.zeros(1)
    return StructureFacts(
        n_frames=len(frames),
        n_atoms=len(first),
        elements=sorted(symbols, key=atomic_numbers.get),
        periodic=bool(pbc.all()),
        partly_periodic=bool(pbc.any() and not pbc.all()),
        n_electrons=int(first.numbers.sum()),
        max_distance_A=float(distances.max()),
        formula=first.get_chemical_formula(),
        cell_lengths_A=tuple(float(x) for x in first.cell.lengths()),
    )


def choose_labeler(facts: StructureFacts, labeler: str | None, structure: Path) -> str:
    """The labeler asked for, or the default (PySCF for molecules, xTB for cells); refused with
    one line where it cannot label this structure."""
    if labeler is None:
        labeler = "xtb" if facts.periodic or facts.partly_periodic else "pyscf"
    if labeler not in LABELERS:
        raise EeltError(f"--labeler {labeler!r}: not one of {', '.join(LABELERS)}")
    if labeler == "emt":
        from ase.calculators.emt import parameters

        unknown = [e for e in facts.elements if e not in parameters]
        if unknown:
            raise EeltError(
                f"--labeler emt: EMT has no parameters for {', '.join(unknown)} "
                f"(it knows {', '.join(parameters)}); use pyscf or xtb"
            )
    elif facts.partly_periodic:
        raise EeltError(
            f"--labeler {labeler}: {structure.name} is periodic in some directions only; "
            f"{labeler} needs all three or none"
        )
    elif labeler == "pyscf" and facts.periodic:
        raise EeltError(
            f"--labeler pyscf: PySCF labels molecules only and {structure.name} is a periodic "
            "cell; use --labeler xtb (GFN1-xTB) or emt"
        )
    return labeler


def choose_model(model: str | None, facts: StructureFacts) -> str:
    """The model family asked for, or the default for the system: MACE for a molecule (5x lower
    held-out force error than DeepPot-SE at equal labels on ethanol, the same training time),
    DeepPot-SE for a cell (its MD is 5x faster on 64 Cu atoms, and cells are labeled with cheap
    xTB); refused with one line if unknown. Figures: docs/benchmarks.md, MACE against DeepPot-SE."""
    if model is None:
        return "deeppot" if facts.periodic or facts.partly_periodic else "mace"
    if model not in MODELS:
        raise EeltError(f"--model {model!r}: not one of {', '.join(MODELS)}")
    return model


def _scalar(text: str) -> str:
    """``text`` as a YAML scalar that reads back as that string (``No`` would be a boolean)."""
    return text if yaml.safe_load(text) == text else json.dumps(text)


def default_name(structure: Path) -> str:
    """The structure file's stem, as a run name may be spelled."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", structure.stem).strip("-.") or "run"


def _timestep_fs(facts: StructureFacts) -> float:
    if facts.has_hydrogen:
        return 0.5
    return 1.0 if facts.lightest_mass < 20 else 2.0


def _rcut_A(facts: StructureFacts) -> float:
    """A molecule: its largest distance + 1 A, rounded up to 0.5 A, within 4-6 A."""
    return min(6.0, max(4.0, math.ceil(2 * (facts.max_distance_A + 1.0)) / 2))


def _candidates(facts: StructureFacts) -> int:
    """Labels per iteration a laptop affords: fewer as the molecule (and its DFT) grows."""
    return 20 if facts.n_atoms <= 6 else 10 if facts.n_atoms <= 15 else 6


COMMENT_COLUMN = 30


def _lines(*entries: str | tuple[str, str]) -> str:
    """YAML lines, each a string or (line, comment) with the comment aligned."""
    out = []
    for entry in entries:
        line, comment = entry if isinstance(entry, tuple) else (entry, "")
        out.append(f"{line:<{COMMENT_COLUMN - 1}} # {comment}" if comment else line)
    return "\n".join(out) + "\n"


def _header(facts: StructureFacts, structure_rel: str) -> str:
    if facts.periodic or facts.partly_periodic:
        kind = "a periodic cell" if facts.periodic else "a partly periodic cell"
        kind += " of " + " x ".join(f"{x:.3g}" for x in facts.cell_lengths_A) + " A"
    else:
        kind = "a molecule"
    frames = f", {facts.n_frames} frames (walkers start from each)" if facts.n_frames > 1 else ""
    return _lines(
        f"# eelt config for {structure_rel}: {facts.formula}, {facts.n_atoms} atoms, {kind}{frames}.",
        "# Written by `eelt init`, sized for a laptop (2 cores). Check it with `eelt validate FILE`,",
        "# run it with `eelt run FILE`, follow it with `eelt status runs/NAME`. Units are in the keys.",
    )


def _label_section(labeler: str, facts: StructureFacts) -> str:
    spin = (
        f"spin: {facts.n_electrons % 2}",
        f"2S; set to the electron count ({facts.n_electrons}, neutral) mod 2 by eelt init",
    )
    if labeler == "pyscf":
        return _lines(
            ("label:", "the reference: PySCF Kohn-Sham DFT, one job per frame"),
            "  kind: pyscf",
            "  xc: pbe",
            "  basis: def2-svp",
            ("  charge: 0", "e; an ion needs its charge (and spin with it)"),
            (f"  {spin[0]}", spin[1]),
            ("", "(0: closed shell, 1: doublet; a triplet needs 2)"),
        )
    if labeler == "xtb":
        method = "GFN1-xTB" if facts.periodic else "GFN2-xTB"
        return _lines(
            ("label:", f"the reference: {method} through tblite (pip install eelt[xtb])"),
            "  kind: xtb",
            (f"  method: {method}", "GFN1-xTB for cells, GFN2-xTB for molecules"),
            "  charge: 0",
            (f"  {spin[0]}", spin[1]),
        )
    return _lines(
        ("label:", "ASE's EMT potential: a cheap stand-in for DFT (demos, tests)"),
        "  kind: emt",
    )


def _init_sampler_section(labeler: str, facts: StructureFacts) -> str:
    """A molecule's initial data: thermal frames of cheap MD (GFN2-xTB, or EMT where the
    labels are EMT), chosen for diversity, with a random few kept as the yardstick."""
    kind = "emt" if labeler == "emt" else "xtb"
    what = "EMT" if kind == "emt" else "GFN2-xTB (tblite)"
    return _lines(
        ("init:", "a thermal start: cheap MD, diverse frames labeled before iteration 0"),
        ("  n_perturbed: 0", "no perturbed copies: thermal frames cover more per label"),
        "  sampler:",
        (f"    kind: {kind}", f"{what} Langevin MD at the stages' temperatures"),
        (f"    n_frames: {_initial_frames(facts)}", "chosen for diversity, labeled"),
        ("    conformers: true", "also from rotamers about each rotatable bond"),
        ("    n_yardstick: 8", "random sampler frames labeled, never trained on: the"),
        ("", "run's error where the molecule goes, beside its test frames"),
    )


def _initial_frames(facts: StructureFacts) -> int:
    """Initial labels a laptop affords: a few more as the molecule (and its room) grows."""
    return 20 if facts.n_atoms <= 6 else 30


# walkers start from the sampler's frames, other ones each iteration: more conformers seen
# (glycerol: energy error 41% and an unseen conformer 23% lower at 80 labels, docs/benchmarks.md)
_SAMPLER_STARTS = (
    ("      starts: sampler", "from the thermal sampler's chosen frames, the next"),
    ("      max_starts: 2", "two each iteration (a walker per start and temperature)"),
)


def _stage(facts: StructureFacts, max_iterations: int) -> list:
    dt = _timestep_fs(facts)
    dump = 20 if dt >= 2.0 else 10
    return [
        ("      ensemble: nvt", "constant volume and temperature"),
        ("      thermostat: langevin", "friction_per_fs 0.01 by default"),
        ("      n_steps: 1000", f"{1000 * dt / 1000:g} ps a walker"),
        (f"      timestep_fs: {dt:g}", "0.5 with H, 1 for other light atoms, 2 for heavy"),
        (f"      dump_interval: {dump}", f"every {dump}th step is examined"),
        f"      max_iterations: {max_iterations}",
    ]


def _train_section(model: str, facts: StructureFacts) -> str:
    """The train section: a 4-member ensemble of the family, sized for a laptop."""
    cell = facts.periodic or facts.partly_periodic
    if model == "mace":
        return _lines(
            ("train:", "a 4-member MACE ensemble (mace-torch), fine-tuned each iteration"),
            "  ensemble_size: 4",
            "  model:",
            "    kind: mace",
            ("    r_max_A: 5.0", "cutoff; 2 layers see 10 A"),
            ("    channels: 32", "mace-torch's num_channels; 64-128 on a GPU"),
            ("    max_L: 1", "0: invariant features only (faster, less accurate)"),
            ("    steps: 2000", "a training from scratch (about 3 min a member on 2 cores)"),
            ("    warm_steps: 500", "each later iteration fine-tunes the previous members"),
            ("    batch_size: 5", "frames per step"),
        )
    if cell:
        sizes = ("    rcut_A: 5.0", "    rcut_smth_A: 1.0")
        fitting, steps = "[64, 64]", ("1500", "600", "2", "5.0e-4", "1.0e-4")
    else:
        sizes = (
            (
                f"    rcut_A: {_rcut_A(facts):.1f}",
                f"the molecule ({facts.max_distance_A:.1f} A across) + 1 A",
            ),
            "    rcut_smth_A: 0.5",
        )
        fitting, steps = "[64, 64, 64]", ("2000", "800", "4", "1.0e-3", "2.0e-4")
    return _lines(
        ("train:", "a 4-member DeepPot-SE ensemble, warm-started each iteration"),
        "  ensemble_size: 4",
        ("  model:", "small nets: a laptop budget (the defaults cost 3-4x)"),
        *sizes,
        "    embedding_widths: [16, 32]",
        "    axis_neuron: 8",
        f"    fitting_widths: {fitting}",
        (f"  steps: {steps[0]}", "raise it on a cluster or GPU"),
        f"  warm_steps: {steps[1]}",
        f"  batch_size: {steps[2]}",
        f"  start_lr: {steps[3]}",
        "  stop_lr: 1.0e-5",
        f"  warm_start_lr: {steps[4]}",
    )


def config_text(
    structure_rel: str, facts: StructureFacts, name: str, labeler: str, model: str = "deeppot"
) -> str:
    """The commented YAML of a first config for the structure (see the module docstring)."""
    cell = facts.periodic or facts.partly_periodic
    text = _header(facts, structure_rel)
    text += _lines(
        (f"name: {_scalar(name)}", f"the run goes to runs/{name}/"),
        ("system:", "start structures (relative to this file), model element order"),
        f"  structures: [{json.dumps(structure_rel)}]",
        f"  type_map: [{', '.join(map(_scalar, facts.elements))}]",
    )
    if cell:
        text += _lines(
            ("init:", "perturbed copies (atoms and cell), labeled before iteration 0"),
            "  n_perturbed: 10",
            "  position_sigma_A: 0.05",
            ("  cell_strain: 0.02", "each copy's cell strained by up to 2%"),
            ("explore:", "MD on the ensemble; a stage runs until converged or max_iterations"),
            "  stages:",
            ("    - temperatures_K: [300, 600]", "the cell stays as given: no npt stage"),
            *_stage(facts, 4),
            "    # an npt stage (ensemble: npt, pressures_bar: [1]) is better with the stress in the",
            "    # training loss: train.start_pref_v / limit_pref_v above 0",
            ("examine:", "trust levels on the max force deviation (eV/A)"),
            "  trust_lo_eV_per_A: 0.05",
            "  trust_hi_eV_per_A: 0.25",
            ("  max_candidates: 8", "labels per iteration, besides the test frames"),
            ("  test_frames: 4", "held out each iteration: the true error"),
        )
        text += _label_section(labeler, facts)
        text += _train_section(model, facts)
        text += _lines(
            ("loop:", "when the run stops, besides convergence"),
            "  max_iterations: 4",
        )
    else:
        text += _init_sampler_section(labeler, facts)
        text += _lines(
            ("explore:", "MD on the ensemble; a stage runs until converged or max_iterations"),
            "  stages:",
            "    - temperatures_K: [300, 500]",
            *_SAMPLER_STARTS,
            *_stage(facts, 3),
            ("    - temperatures_K: [600, 800]", "then hotter"),
            *_SAMPLER_STARTS,
            *_stage(facts, 3),
            ("examine:", "trust levels on the max force deviation (eV/A)"),
            "  trust_lo_eV_per_A: 0.06",
            "  trust_hi_eV_per_A: 0.25",
            (
                f"  max_candidates: {_candidates(facts)}",
                "labels per iteration, besides the test frames",
            ),
            ("  test_frames: 4", "held out each iteration: the true error"),
        )
        text += _label_section(labeler, facts)
        text += _train_section(model, facts)
        text += _lines(
            ("loop:", "when the run stops, besides convergence"),
            "  max_iterations: 6",
        )
    text += _lines(
        ("execution:", "where jobs run: 2 local Dask workers (docs/hpc.md: Slurm & co.)"),
        "  kind: local",
        "  n_workers: 2",
        "  threads_per_worker: 1",
    )
    return text


def write_init_config(
    structure: str | Path,
    out: str | Path = "eelt.yaml",
    name: str | None = None,
    labeler: str | None = None,
    model: str | None = None,
) -> tuple[Path, str, str]:
    """Write a first config for ``structure`` to ``out`` (never over an existing file); returns
    the path, the labeler and the model family chosen."""
    structure, out = Path(structure), Path(out)
    if out.exists():
        raise EeltError(f"{out}: exists; eelt init does not overwrite it (choose another --out)")
    facts = read_facts(structure)
    labeler = choose_labeler(facts, labeler, structure)
    model = choose_model(model, facts)
    name = default_name(structure) if name is None else name
    if not re.match(NAME_PATTERN, name):
        raise EeltError(f"--name {name!r}: use letters, digits, '_', '.' and '-' only")
    rel = Path(os.path.relpath(structure.resolve(), out.parent.resolve())).as_posix()
    text = config_text(rel, facts, name, labeler, model)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "x") as fh:  # exclusive: a file created meanwhile is not overwritten
        fh.write(text)
    return out, labeler, model
