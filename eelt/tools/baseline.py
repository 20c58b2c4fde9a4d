"""Active learning against random selection, at equal numbers of DFT labels.

For each training-set size N, ensembles are trained from scratch with the run's own train
settings, differing in how their frames were chosen: "selected" is the run's training data
(initial frames, then the candidates the ensemble deviation chose, in iteration order) cut to
N frames; "random" is the same initial frames plus frames drawn uniformly at random from
everything the run explored; "thermal" (when the run has a thermal sampler, init.sampler) is N
frames drawn uniformly at random from the sampler's whole MD trajectory: the recipe a user runs
by hand, MD with a cheap method and the reference on random frames. Each is evaluated on the
run's held-out test frames, on its yardstick (frames no model chose) and on a user's labeled
dataset. Everything goes under ``RUN_DIR/baseline/``; labels go through the run's
content-hashed label store and training skips finished members, so a rerun computes nothing.

The random pools leave out the run's test frames, its yardstick, every frame of its training
data (the initial frames and the selected candidates: random and active learning then share
the initial frames only) and repeats of a frame (every walker dumps its start structure at
step 0).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
from ase import Atoms

from eelt import atomic
from eelt.config import TrainConfig
from eelt.errors import EeltError
from eelt.label import Labeler, frame_hash, label_frames
from eelt.orchestration.rundir import RunDir

log = logging.getLogger(__name__)

BASELINE_DIR = "baseline"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PLOT = "force_rmse.png"
FAILURES = "label-failures.json"  # hash -> reason of random frames whose label failed
MANIFEST = "set.json"  # in a models dir: what its ensemble was trained on
SETS = ("selected", "random", "thermal")
EVAL_SETS = ("test", "yardstick", "data")  # the run's test frames and yardstick, --data


class FrameIndex:
    """A set of frames, matched by atomic numbers, pbc, and positions and cell within ``tol_A``.

    Frames are bucketed by atomic numbers, pbc and the first atom's position on a 1e-3 Angstrom
    grid (a look-up checks the 27 neighbouring cells), so a look-up costs O(1) for MD frames.
    """

    GRID_A = 1e-3

    def __init__(self, frames: Iterable[Atoms] = (), tol_A: float = 1e-6):
        if not 0 < tol_A < self.GRID_A:
            raise ValueError(f"tol_A must be in (0, {self.GRID_A}), got {tol_A}")
        self.tol_A = tol_A
        self._buckets: dict[tuple, list[np.ndarray]] = {}
        self._n = 0
        for atoms in frames:
            self.add(atoms)

    def __len__(self) -> int:
        return self._n

    @staticmethod
    def _species(atoms: Atoms) -> tuple[bytes, bytes]:
        return (
            np.asarray(atoms.numbers, dtype="<i8").tobytes(),
            np.asarray(atoms.pbc, dtype="u1").tobytes(),
        )

    @staticmethod
    def _vector(atoms: Atoms) -> np.ndarray:
        return np.concatenate([np.ravel(atoms.positions), np.ravel(atoms.cell.array)])

    def _cell(self, vector: np.ndarray) -> tuple[int, ...]:
        return tuple(int(c) for c in np.floor(vector[:3] / self.GRID_A))

    def add(self, atoms: Atoms) -> None:
        vector = self._vector(atoms)
        key = (self._species(atoms), self._cell(vector))
        self._buckets.setdefault(key, []).append(vector)
        self._n += 1

    def __contains__(self, atoms: Atoms) -> bool:
        vector = self._vector(atoms)
        species = self._species(atoms)
        cell = self._cell(vector)
        for shift in itertools.product((-1, 0, 1), repeat=3):
            key = (species, tuple(c + s for c, s in zip(cell, shift, strict=True)))
            for other in self._buckets.get(key, ()):
                if np.abs(other - vector).max() <= self.tol_A:
                    return True
        return False


def read_all(files: Sequence[Path]) -> list[Atoms]:
    """Every frame of every extxyz file, in order (an empty file holds no frame)."""
    frames: list[Atoms] = []
    for f in files:
        if Path(f).stat().st_size:
            frames += ase.io.read(f, ":", format="extxyz")
    return frames


def explored_frames(run: RunDir) -> list[Atoms]:
    """The frames of every finished exploration (iteration 0, 1, ... while one is finished)."""
    frames: list[Atoms] = []
    for iteration in itertools.count():
        files = run.explored_files(iteration)
        if not files:
            return frames
        frames += read_all(files)


def candidate_order(explored: Sequence[Atoms], exclude: FrameIndex, rng) -> list[int]:
    """Indices of ``explored`` in one seeded random permutation, leaving out frames in
    ``exclude`` and repeats of an earlier frame of the permutation."""
    seen = FrameIndex(tol_A=exclude.tol_A)
    order = []
    for i in rng.permutation(len(explored)):
        atoms = explored[int(i)]
        if atoms in exclude or atoms in seen:
            continue
        seen.add(atoms)
        order.append(int(i))
    return order


def draw_random_frames(explored: Sequence[Atoms], exclude: FrameIndex, n: int, rng) -> list[Atoms]:
    """The first ``n`` (or fewer, if the pool is smaller) frames of ``candidate_order``: drawn
    uniformly at random without replacement, none in ``exclude``, no repeats."""
    return [explored[i] for i in candidate_order(explored, exclude, rng)[:n]]


class RandomDraw:
    """Labels frames of ``candidates`` in their order until enough are labeled.

    A frame whose label failed (an SCF that did not converge) is skipped and the next one taken;
    its hash and reason go into ``failures`` (persist it, so a rerun does not try it again).
    Labels come from and go to the run's label store ``labels_dir``.
    """

    def __init__(
        self,
        candidates: Sequence[Atoms],
        labeler: Labeler,
        executor: Executor,
        labels_dir: Path,
        failures: dict[str, str],
    ):
        self.candidates = list(candidates)
        self.labeler = labeler
        self.executor = executor
        self.labels_dir = labels_dir
        self.failures = failures
        self.settings = labeler.settings()
        self.labeled: list[Atoms] = []
        self.n_computed = 0  # labels computed (not read from the store) so far
        self._next = 0

    def take(self, n: int) -> list[Atoms]:
        """The first ``n`` labeled frames; raises EeltError when the candidates run out."""
        while len(self.labeled) < n:
            batch: list[Atoms] = []
            while len(batch) < n - len(self.labeled) and self._next < len(self.candidates):
                atoms = self.candidates[self._next]
                self._next += 1
                if frame_hash(atoms, self.settings) not in self.failures:
                    batch.append(atoms)
            if not batch:
                raise EeltError(
                    f"the explored frames ran out: {n} random frames wanted, only "
                    f"{len(self.labeled)} of the {len(self.candidates)} usable ones could be "
                    f"labeled ({len(self.failures)} failed); explore more or ask for fewer --labels"
                )
            report = label_frames(batch, self.labeler, self.executor, self.labels_dir)
            self.n_computed += report.n_computed
            for failure in report.failed:
                self.failures[failure["hash"]] = failure["reason"]
                log.warning("random frame not labeled, taking the next: %s", failure["reason"])
            self.labeled += report.labeled  # in input order: the permutation's
        return self.labeled[:n]


@dataclass(frozen=True)
class TrainingSet:
    """The frames one baseline ensemble trains on; ``n_labels_computed`` counts the DFT labels
    computed for them in this call."""

    name: str  # one of SETS
    frames: list[Atoms]
    n_labels_computed: int = 0

    @property
    def n_labels(self) -> int:
        return len(self.frames)


def random_sets(
    ns: Sequence[int], init: Sequence[Atoms], draw: RandomDraw
) -> dict[int, TrainingSet]:
    """For each N (ascending): ``init`` plus the first N - len(init) frames of ``draw``, so a
    smaller N's set is a prefix of a larger one's and their labels are shared."""
    out = {}
    for n in sorted(ns):
        drawn = draw.take(n - len(init))
        out[n] = TrainingSet("random", [*init, *drawn], draw.n_computed)
    return out


def selected_set(training: Sequence[Atoms], n: int) -> TrainingSet | None:
    """The run's own training data cut to its first ``n`` frames; None if it holds fewer."""
    if n > len(training):
        return None
    return TrainingSet("selected", list(training[:n]))


def build_sets(
    ns: Sequence[int],
    init: Sequence[Atoms],
    training: Sequence[Atoms],
    draw: RandomDraw,
    thermal: RandomDraw | None = None,
    names: Sequence[str] = SETS,
) -> dict[int, dict[str, TrainingSet | None]]:
    """For each N (ascending), the sets among ``names``: "selected": the run's first N
    training frames (None if it has fewer); "random": ``init`` plus N - len(init) frames of
    ``draw``; "thermal": the first N frames of ``thermal`` (None without a sampler)."""
    randoms = random_sets(ns, init, draw) if "random" in names else {}
    out = {}
    for n in sorted(ns):
        sets: dict[str, TrainingSet | None] = {}
        if "selected" in names:
            sets["selected"] = selected_set(training, n)
        if "random" in names:
            sets["random"] = randoms[n]
        if "thermal" in names:
            sets["thermal"] = (
                None
                if thermal is None
                else TrainingSet("thermal", thermal.take(n), thermal.n_computed)
            )
        out[n] = sets
    return out


def set_fingerprint(frames: Sequence[Atoms], settings: dict) -> str:
    """SHA-256 over the frames' label hashes in order: two sets with one fingerprint train alike."""
    h = hashlib.sha256()
    for atoms in frames:
        h.update(frame_hash(atoms, settings).encode())
    return h.hexdigest()


def train_set(
    data_file: Path,
    models_dir: Path,
    manifest: dict[str, Any],
    train: TrainConfig,
    type_map: list[str],
    executor: Executor,
) -> int:
    """Train an ensemble from scratch on ``data_file`` into ``models_dir``; return how many
    members were trained (0 on a rerun). An ensemble left there for another set (another seed,
    or the run explored more since) is removed first: ``manifest`` says what it is for."""
    from eelt.train import TrainingDiverged, train_ensemble

    manifest_path = models_dir / MANIFEST
    old = atomic.read_json(manifest_path) if manifest_path.is_file() else None
    stale = sorted(models_dir.glob("model-*.pt")) if old != manifest else []
    if stale:
        log.warning("%s was trained on another set; training it again", models_dir)
        for name in ("model-*.pt", "model-*.csv", "metrics.json", "learning_curves.png"):
            for path in models_dir.glob(name):
                path.unlink()
    atomic.write_json(manifest_path, manifest)
    missing = [
        m for m in range(train.ensemble_size) if not (models_dir / f"model-{m}.pt").is_file()
    ]
    if missing:
        log.info("training %d members from scratch in %s", len(missing), models_dir)
        try:
            train_ensemble([str(data_file)], models_dir, train, list(type_map), executor)
        except TrainingDiverged as err:
            raise EeltError(f"{models_dir}: training diverged: {err}") from None
    return len(missing)


def train_and_evaluate(
    tset: TrainingSet,
    data_file: Path,
    models_dir: Path,
    train: TrainConfig,
    type_map: list[str],
    settings: dict,
    executor: Executor,
    eval_sets: dict[str, list[Atoms]],
) -> dict[str, Any]:
    """Write ``tset`` to ``data_file``, train an ensemble on it from scratch into ``models_dir``
    (``train``: the run's TrainConfig; nothing trained on a rerun) and evaluate it on
    ``eval_sets``; RMSEs in meV/atom and meV/Angstrom."""
    atomic.write_frames(data_file, tset.frames)
    manifest = {
        "set": tset.name,
        "n_labels": tset.n_labels,
        "fingerprint": set_fingerprint(tset.frames, settings),
        "train": train.model_dump(mode="json"),
        "type_map": list(type_map),
    }
    n_trained = train_set(data_file, models_dir, manifest, train, type_map, executor)
    return {
        "n_labels": tset.n_labels,
        "data_file": str(data_file),
        "models_dir": str(models_dir),
        "n_labels_computed": tset.n_labels_computed,
        "n_members_trained": n_trained,
        **evaluate(models_dir, eval_sets),
    }


def evaluate(models_dir: Path, eval_sets: dict[str, list[Atoms]]) -> dict[str, dict | None]:
    """Energy RMSE (meV/atom), force RMSE and MAE (meV/Angstrom) of the ensemble's mean on
    each evaluation set (None for an empty one)."""
    from eelt.model.families import load_ensemble
    from eelt.train import error_metrics

    ensemble = load_ensemble(models_dir)
    return {
        name: error_metrics(ensemble, frames) if frames else None
        for name, frames in eval_sets.items()
    }


def read_reference(path: Path) -> list[Atoms]:
    """Labeled frames of a user's extxyz, checked to carry a reference energy and forces."""
    if not path.is_file():
        raise EeltError(f"--data {path}: no such file")
    try:
        frames = ase.io.read(path, ":")
    except Exception as err:  # ase.io raises many kinds for unreadable files
        raise EeltError(f"--data {path}: cannot read ({type(err).__name__}: {err})") from None
    if not frames:
        raise EeltError(f"--data {path}: holds no frame")
    for i, atoms in enumerate(frames):
        results = getattr(atoms.calc, "results", None) or {}
        if "energy" not in results or "forces" not in results:
            raise EeltError(f"--data {path}: frame {i} has no reference energy and forces")
    return frames


def _check_labels(ns: Sequence[int] | None, n_init: int, n_run: int) -> list[int]:
    ns = sorted(set(ns)) if ns else [n_run]
    for n in ns:
        if n < n_init + 1:
            raise EeltError(
                f"--labels {n}: at least {n_init + 1} (the run's {n_init} initial frames "
                "plus one chosen frame)"
            )
    return ns


def run_baseline(
    root: str | Path,
    labels: Sequence[int] | None = None,
    data: str | Path | None = None,
    seed: int | None = None,
    executor: Executor | None = None,
    sets: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Compare selection by ensemble deviation with random selection in run ``root``.

    ``labels``: training-set sizes N (default: the run's number of training labels);
    ``data``: an extra labeled extxyz to evaluate on; ``seed``: of the random draw (default
    examine.seed); ``executor``: for labels and training (default: the run's execution
    config); ``sets``: which of SETS to train (default: all; "thermal" needs the run's
    thermal sampler). Writes ``root/baseline/`` (sets, ensembles, report.json, report.md,
    force_rmse.png) and returns the report. RMSEs in meV/atom and meV/Angstrom. Holds the run
    directory's lock (:mod:`eelt.orchestration.lock`) meanwhile: refused while a run writes it.
    """
    from eelt.orchestration.lock import acquire

    run = RunDir(root)
    if not run.exists():
        raise EeltError(f"{run.root}: not an eelt run directory (no eelt.yaml)")
    with acquire(run.root, "eelt baseline"):
        return _compare(run, labels, data, seed, executor, _check_sets(sets, run))


def _check_sets(sets: Sequence[str] | None, run: RunDir) -> list[str]:
    if not sets:
        return [s for s in SETS if s != "thermal" or run.sampler_trajectory_file.is_file()]
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise EeltError(f"--set {unknown[0]}: not one of {', '.join(SETS)}")
    if "thermal" in sets and not run.sampler_trajectory_file.is_file():
        raise EeltError(
            f"--set thermal: {run.root} has no thermal sampler trajectory "
            f"({run.sampler_trajectory_file.relative_to(run.root)}; init.sampler is off)"
        )
    return [s for s in SETS if s in sets]


def _compare(
    run: RunDir,
    labels: Sequence[int] | None,
    data: str | Path | None,
    seed: int | None,
    executor: Executor | None,
    names: Sequence[str] = SETS,
) -> dict[str, Any]:
    from eelt.label import make_labeler

    config = run.load_config()
    explored = explored_frames(run)
    # the initial data both arms share: the user's own frames and the labeled init frames
    init_files = [f for f in (run.user_data_file, run.data_dir / "init.extxyz") if f.is_file()]
    if not explored or not init_files:
        raise EeltError(f"{run.root}: no finished iteration yet; run the loop first")
    init = read_all(init_files)
    training = read_all(run.data_files())
    test = read_all(run.test_data_files())
    yardstick = read_all(run.yardstick_files())
    reference = read_reference(Path(data)) if data is not None else []
    notes = []
    if not test and not reference:
        raise EeltError(
            f"{run.root}: the run has no test frames (data/test/) and no --data was given: "
            "nothing to evaluate on"
        )
    if not test:
        notes.append("the run has no test frames (data/test/): evaluated on --data only")
    ns = _check_labels(labels, len(init), len(training))

    seed = config.examine.seed if seed is None else int(seed)
    labeler = make_labeler(config.label)
    settings = labeler.settings()
    exclude = FrameIndex([*test, *training, *yardstick])
    order = candidate_order(explored, exclude, np.random.default_rng(seed))
    candidates = [explored[i] for i in order]
    thermal_pool = read_all([run.sampler_trajectory_file]) if "thermal" in names else []
    thermal = [
        thermal_pool[i]
        for i in candidate_order(thermal_pool, exclude, np.random.default_rng(seed + 1))
    ]
    if "thermal" in names and ns[-1] > len(thermal):
        raise EeltError(
            f"--labels {ns[-1]}: the sampler's trajectory holds only {len(thermal)} usable "
            "frames for the thermal set; ask for fewer --labels"
        )
    wanted = ns[-1] - len(init)
    if "random" in names and wanted > len(candidates):
        raise EeltError(
            f"--labels {ns[-1]}: needs {wanted} random frames besides the {len(init)} initial "
            f"ones, but the run explored only {len(candidates)} usable frames ({len(explored)} "
            "explored, less test frames, training frames and repeats)"
        )

    out = run.root / BASELINE_DIR
    failures_path = out / FAILURES
    failures = atomic.read_json(failures_path) if failures_path.is_file() else {}
    n_failures = len(failures)
    type_map = list(config.system.type_map or [])
    eval_sets = {"test": test, "yardstick": yardstick, "data": reference}
    results = []
    with ExitStack() as stack:
        if executor is None:
            from eelt.orchestration.execution import open_executor

            executor = stack.enter_context(open_executor(config.execution, run.root / "logs"))
        draw = RandomDraw(candidates, labeler, executor, run.labels_dir, failures)
        thermal_draw = (
            RandomDraw(thermal, labeler, executor, run.labels_dir, failures) if thermal else None
        )
        try:
            sets = build_sets(ns, init, training, draw, thermal_draw, names)
        finally:
            if len(failures) != n_failures:
                atomic.write_json(failures_path, failures)
        for n, pair in sets.items():
            entry: dict[str, Any] = {"n_labels": n, "selected": None, "selected_missing": None}
            if "selected" in pair and pair["selected"] is None:
                entry["selected_missing"] = f"the run has only {len(training)} training labels"
            for name, tset in pair.items():
                if tset is not None:
                    entry[name] = train_and_evaluate(
                        tset,
                        out / f"{name}-N{n}.extxyz",
                        out / f"N{n}" / name,
                        config.train,
                        type_map,
                        settings,
                        executor,
                        eval_sets,
                    )
                    for key in ("data_file", "models_dir"):
                        entry[name][key] = str(Path(entry[name][key]).relative_to(run.root))
            results.append(entry)

    report = {
        "run": str(run.root),
        "seed": seed,
        "n_init": len(init),
        "n_run_labels": len(training),
        "n_explored": len(explored),
        "n_random_pool": len(candidates),
        "n_thermal_pool": len(thermal),
        "sets": list(names),
        "n_test_frames": len(test),
        "n_yardstick_frames": len(yardstick),
        "data": None if data is None else str(data),
        "n_data_frames": len(reference),
        "n_label_failures": len(failures),
        "train": config.train.model_dump(mode="json"),
        "results": results,
        "notes": notes,
    }
    atomic.write_json(out / REPORT_JSON, report)
    atomic.write_text(out / REPORT_MD, markdown_table(report))
    plot_force_rmse(report, out / PLOT)
    return report


def _fmt(metrics: dict | None, key: str, digits: int) -> str:
    value = (metrics or {}).get(key)
    return "-" if value is None else f"{value:.{digits}f}"


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per (N, set): N, set, labels computed, test F RMSE, test E RMSE, --data F RMSE,
    --data E RMSE (meV/Angstrom, meV/atom); '-' where there is nothing."""
    rows = []
    for entry in report["results"]:
        for name in report.get("sets", SETS[:2]):
            result = entry.get(name)
            if result is None:
                rows.append([str(entry["n_labels"]), name] + ["-"] * (len(TABLE_HEADER) - 2))
                continue
            row = [str(entry["n_labels"]), name, str(result["n_labels_computed"])]
            for where in EVAL_SETS:
                row.append(_fmt(result.get(where), "force_rmse_meV_per_A", 1))
                row.append(_fmt(result.get(where), "energy_rmse_meV_per_atom", 2))
            rows.append(row)
    return rows


TABLE_HEADER = [
    "N",
    "set",
    "labels computed",
    "test F RMSE (meV/Å)",
    "test E RMSE (meV/atom)",
    "yardstick F RMSE (meV/Å)",
    "yardstick E RMSE (meV/atom)",
    "--data F RMSE (meV/Å)",
    "--data E RMSE (meV/atom)",
]


def markdown_table(report: dict[str, Any]) -> str:
    """The report as a markdown table, with what was compared on top."""
    data = f"; --data {report['data']} ({report['n_data_frames']} frames)" if report["data"] else ""
    lines = [
        f"# Active learning against random selection: {report['run']}",
        "",
        f"{report['n_init']} initial frames in the selected and random sets; random frames "
        f"drawn (seed {report['seed']}) from {report['n_random_pool']} of "
        f"{report['n_explored']} explored frames"
        + (
            f"; thermal frames from {report['n_thermal_pool']} frames of the sampler's MD"
            if "thermal" in report.get("sets", ())
            else ""
        )
        + f"; {report['n_test_frames']} test frames, "
        f"{report.get('n_yardstick_frames', 0)} yardstick frames{data}.",
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "---|" * len(TABLE_HEADER),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(report)]
    for entry in report["results"]:
        if entry.get("selected_missing"):
            lines.append(f"\nN={entry['n_labels']}: no selected set: {entry['selected_missing']}.")
    lines += [f"\nNote: {note}." for note in report["notes"]]
    return "\n".join(lines) + "\n"


def plot_force_rmse(report: dict[str, Any], path: str | Path) -> Path:
    """Save (atomically) a PNG of force RMSE (meV/Angstrom) against training labels, one line
    per training set and evaluation set."""
    from matplotlib.figure import Figure  # no pyplot: no global state, safe off the main thread
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.0, 4.0), dpi=100)
    ax = fig.add_subplot()
    styles = {"test": "-", "yardstick": "--", "data": ":"}
    colors = {"selected": "tab:blue", "random": "tab:orange", "thermal": "tab:green"}
    markers = {"selected": "o", "random": "s", "thermal": "^"}
    names = {"test": "test frames", "yardstick": "yardstick", "data": "--data"}
    for where in EVAL_SETS:
        for name in SETS:
            points = [
                (e["n_labels"], e[name][where]["force_rmse_meV_per_A"])
                for e in report["results"]
                if e.get(name) and e[name].get(where)
            ]
            if not points:
                continue
            x, y = zip(*points, strict=True)
            label = f"{name}, {names[where]}"
            ax.plot(x, y, ls=styles[where], marker=markers[name], color=colors[name], label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("DFT labels in the training set")
    ax.set_ylabel("force RMSE (meV/Å)")
    ax.set_title("selection by ensemble deviation against random selection")
    if ax.lines:
        ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return atomic.atomic_write(path, lambda p: fig.savefig(p, format="png"))
