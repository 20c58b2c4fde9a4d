"""Everything a config can be checked for without DFT, before any server or cluster starts:
structure files exist and read, the type map covers them, the labeler knows the elements (PySCF:
the xc is known and the basis builds each start molecule), biases fit the structures, initial
data is labeled, and the run directory may be resumed. Nothing is written.

``preflight`` returns what ``prepare_run`` needs; every problem found is reported at once, one
line each, in one EeltError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms

from eelt.config import RunConfig
from eelt.errors import EeltError
from eelt.orchestration.rundir import RunDir, read_structures, resolve_type_map


@dataclass
class Inputs:
    """The resolved config and the frozen inputs of a run."""

    config: RunConfig
    starts: list[Atoms]
    stage_starts: dict[int, list[Atoms]] = field(default_factory=dict)
    user_data: list[Atoms] = field(default_factory=list)
    yardstick: list[Atoms] = field(default_factory=list)


def _cheap_potential_problems(kind: str, where: str, elements: list[str]) -> list[str]:
    """What stops EMT or GFN-xTB (``kind``, set at ``where``) on these elements, if anything."""
    if kind == "emt":
        from ase.calculators.emt import parameters

        unknown = [e for e in elements if e not in parameters]
        return [f"{where}: EMT has no parameters for {', '.join(unknown)}"] if unknown else []
    if kind == "xtb":
        try:
            import tblite.ase  # noqa: F401
        except ImportError:
            return [f"{where}: kind 'xtb' needs tblite (pip install eelt[xtb])"]
    return []


def _labeler_problems(config: RunConfig, structures: list[Atoms]) -> list[str]:
    label = config.label
    elements = sorted({s for a in structures for s in a.get_chemical_symbols()})
    sampler = config.init.sampler.kind
    problems = _cheap_potential_problems(sampler, "init.sampler", elements)
    if label.kind in ("emt", "xtb"):
        return problems + _cheap_potential_problems(label.kind, "label", elements)
    from pyscf import dft, gto

    try:
        dft.libxc.parse_xc(label.xc)
    except Exception as err:  # PySCF raises KeyError/ValueError for unknown functionals
        problems.append(f"label.xc: {label.xc!r} is not a functional PySCF knows ({err})")
    if label.dispersion:
        try:
            import pyscf.dispersion  # noqa: F401
        except ImportError:
            problems.append(
                "label.dispersion needs pyscf-dispersion (pip install eelt[dispersion])"
            )
    for atoms in structures[:1] if not problems else []:
        if atoms.pbc.any():
            problems.append("label: PySCF labels molecules only; a structure has a periodic cell")
            continue
        try:
            gto.M(
                atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)],
                basis=label.basis, charge=label.charge, spin=label.spin, verbose=0, output=None,
            )  # fmt: skip
        except Exception as err:
            text = " ".join(str(err).split())[:200]
            problems.append(
                f"label: PySCF cannot build {atoms.get_chemical_formula()} with basis "
                f"{label.basis!r}, charge {label.charge}, spin {label.spin} ({text})"
            )
    return problems


def preflight(config: RunConfig, base_dir: Path, root: Path | None = None) -> Inputs:
    """Check ``config`` (paths relative to ``base_dir``) and, given ``root``, that the run there
    may be resumed with it; raise one EeltError listing every problem."""
    from eelt.orchestration.initdata import read_labeled_data

    problems: list[str] = []

    def attempt(fn, *args, default=None):
        try:
            return fn(*args)
        except EeltError as err:
            problems.extend(str(err).splitlines())
            return default

    starts = [  # file by file, so every missing or unreadable one is named
        a
        for name in config.system.structures
        for a in attempt(read_structures, config.system, base_dir, [name], default=[])
    ]
    stage_starts = {}
    for k, stage in enumerate(config.explore.stages):
        if isinstance(stage.starts, list):
            where = f"explore.stages.{k}.starts"
            got = attempt(read_structures, config.system, base_dir, stage.starts, where)
            if got is not None:
                stage_starts[k] = got
    if not starts:
        raise EeltError("\n".join(problems))
    type_map = attempt(resolve_type_map, config, starts)
    if type_map is None:
        raise EeltError("\n".join(problems))
    config = config.model_copy(
        update={"system": config.system.model_copy(update={"type_map": type_map})}
    )
    if config.label.store:  # frozen as an absolute path, so it means the same on resume
        store = str((base_dir / config.label.store).resolve())
        config = config.model_copy(
            update={"label": config.label.model_copy(update={"store": store})}
        )
    base_model = getattr(config.train.model, "base_model", None)
    if base_model is not None:  # frozen as an absolute path, so it means the same on resume
        path = (base_dir / Path(base_model).expanduser()).resolve()
        if not path.is_file():
            problems.append(
                f"train.model.base_model: {base_model}: no such file (looked in {base_dir})"
            )
        model = config.train.model.model_copy(update={"base_model": str(path)})
        config = config.model_copy(
            update={"train": config.train.model_copy(update={"model": model})}
        )
    for k, frames in stage_starts.items():
        unknown = sorted({s for a in frames for s in a.get_chemical_symbols()} - set(type_map))
        if unknown:
            problems.append(f"explore.stages.{k}.starts: elements {unknown} not in {type_map}")
    for k, stage in enumerate(config.explore.stages):
        frames = stage_starts.get(k, starts)
        if stage.ensemble == "npt":
            for atoms in frames:
                if not atoms.pbc.all() or atoms.cell.volume <= 0:
                    problems.append(
                        f"explore.stages.{k}: ensemble 'npt' needs structures periodic in all "
                        f"three directions; {atoms.get_chemical_formula()} is not"
                    )
                    break
        n_atoms = min(len(a) for a in frames) if frames else 0
        for b, bias in enumerate(stage.biases):
            for c, cv in enumerate(getattr(bias, "cvs", [])):
                used = [*(cv.atoms or []), *(cv.group_a or []), *(cv.group_b or [])]
                if used and max(used) >= n_atoms:
                    problems.append(
                        f"explore.stages.{k}.biases.{b}.cvs.{c}: atom index {max(used)} is out "
                        f"of range for a structure of {n_atoms} atoms (indices start at 0)"
                    )
    if any(b.kind == "plumed" for stage in config.explore.stages for b in stage.biases):
        from eelt.explore.plumed import plumed_kernel_error

        if (why := plumed_kernel_error()) is not None:
            problems.append(f"explore: a stage has a plumed bias, but {why}")
    problems += _labeler_problems(config, [*starts, *(a for f in stage_starts.values() for a in f)])
    user_data = attempt(read_labeled_data, config.init.data, base_dir, type_map, default=[])
    yardstick = attempt(
        read_labeled_data, config.examine.yardstick_data, base_dir, type_map,
        "examine.yardstick_data", default=[],
    )  # fmt: skip
    inputs = Inputs(config, starts, stage_starts, user_data, yardstick)  # (nothing below writes)
    if root is not None and not problems:
        run = RunDir(root)
        if run.exists():
            attempt(run.check_compatible, config, starts, user_data, stage_starts, yardstick)
    if problems:
        raise EeltError("\n".join(problems))
    return inputs
