"""The run directory: the source of truth of a run, laid out as in DESIGN.md.

A stage is finished when its ``report.json`` exists (written last, atomically); resume
skips finished stages. Labeled data under ``data/`` is only ever added to, and every
finished DFT job sits in ``labels/`` under its content hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ase.io
import numpy as np
import yaml
from ase import Atoms
from ase.data import atomic_numbers

from eelt import atomic
from eelt.config import RunConfig, SystemConfig, parse_config
from eelt.errors import EeltError

STAGES = ("explore", "examine", "label", "train")
CONFIG_FILE = "eelt.yaml"
STATE_FILE = "state.json"
STARTS_FILE = "starts.extxyz"
USER_DATA_FILE = "user.extxyz"  # in data/: init.data, the user's own labeled frames
YARDSTICK_FILE = "yardstick.extxyz"  # in data/: frames no model chose, never trained on
SAMPLER_YARDSTICK_FILE = "yardstick-sampler.extxyz"  # in data/: the same, from init.sampler
REPORT = "report.json"


def read_structures(
    system: SystemConfig, base_dir: Path, names: list[str] | None = None, where: str = ""
) -> list[Atoms]:
    """Read every start structure (any ase.io format, all frames of each file): the system's,
    or ``names`` (errors prefixed with ``where``)."""
    frames: list[Atoms] = []
    where = where or "system.structures"
    for name in system.structures if names is None else names:
        path = (base_dir / name).resolve()
        if not path.is_file():
            raise EeltError(f"{where}: {name}: no such file (looked in {base_dir})")
        try:
            got = ase.io.read(path, ":")
        except Exception as err:  # ase.io raises many kinds for unreadable files
            raise EeltError(f"{where}: {name}: cannot read ({type(err).__name__}: {err})") from None
        if not got:
            raise EeltError(f"{where}: {name}: holds no structure")
        for atoms in got:
            atoms.calc = None
        frames.extend(got)
    return frames


def resolve_type_map(config: RunConfig, starts: list[Atoms]) -> list[str]:
    """The model's element order: the configured one, or the start elements by atomic number."""
    present = sorted({s for a in starts for s in a.get_chemical_symbols()}, key=atomic_numbers.get)
    if config.system.type_map is None:
        return present
    missing = [s for s in present if s not in config.system.type_map]
    if missing:
        raise EeltError(
            f"system.type_map: {config.system.type_map} lacks {missing}, present in the structures"
        )
    return list(config.system.type_map)


class RunDir:
    """Paths and persisted records of one run."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # --- paths -------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def labels_dir(self) -> Path:
        """Where finished labels live: ``label.store`` when the run has one, else labels/."""
        if self.exists():
            store = self.load_config().label.store
            if store:
                return Path(store)
        return self.root / "labels"

    def init_dir(self, stage: str) -> Path:
        return self.root / "init" / stage

    def stage_dir(self, iteration: int, stage: str) -> Path:
        return self.root / f"iter-{iteration:03d}" / stage

    # --- creation and resume -------------------------------------------------------
    def exists(self) -> bool:
        return self.config_path.is_file()

    def create(
        self,
        config: RunConfig,
        starts: list[Atoms],
        user_data: list[Atoms] = (),
        stage_starts: dict[int, list[Atoms]] | None = None,
        yardstick: list[Atoms] = (),
    ) -> None:
        """Freeze the resolved config, the start structures (the system's and each stage's own),
        the user's initial data and yardstick frames."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic.write_frames(self.root / STARTS_FILE, starts)
        if user_data:
            atomic.write_frames(self.user_data_file, list(user_data))
        if yardstick:
            atomic.write_frames(self.yardstick_file, list(yardstick))
        for stage, frames in (stage_starts or {}).items():
            atomic.write_frames(self.stage_starts_file(stage), frames)
        atomic.write_text(
            self.config_path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        )

    def load_config(self) -> RunConfig:
        return parse_config(yaml.safe_load(self.config_path.read_text()), str(self.config_path))

    def check_compatible(
        self,
        config: RunConfig,
        starts: list[Atoms],
        user_data: list[Atoms] = (),
        stage_starts: dict[int, list[Atoms]] | None = None,
        yardstick: list[Atoms] = (),
    ) -> None:
        """Refuse to resume with a config whose science (or start structures, initial data or
        yardstick frames) differs from the frozen one."""
        frozen = self.load_config().science()
        new = config.science()
        diffs = sorted(_diff_keys(frozen, new))
        if not _same_structures(self.starts(), starts):
            diffs.append("system.structures (the structures themselves)")
        if not _same_structures(self.user_data(), list(user_data)):
            diffs.append("init.data (the frames themselves)")
        if not _same_structures(self.yardstick(), list(yardstick)):
            diffs.append("examine.yardstick_data (the frames themselves)")
        for stage, frames in (stage_starts or {}).items():
            if not _same_structures(self.stage_starts(stage), frames):
                diffs.append(f"explore.stages.{stage}.starts (the structures themselves)")
        if diffs:
            raise EeltError(
                f"{self.root}: the config differs from the one this run started with in "
                f"{', '.join(diffs)}; only 'loop' and 'execution' may change on resume "
                "(start a new run name to change the science)"
            )

    def update_resumable(self, config: RunConfig) -> None:
        """Record the new loop/execution settings of a resumed run."""
        atomic.write_text(
            self.config_path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        )

    def starts(self) -> list[Atoms]:
        return ase.io.read(self.root / STARTS_FILE, ":")

    @property
    def user_data_file(self) -> Path:
        return self.data_dir / USER_DATA_FILE

    def user_data(self) -> list[Atoms]:
        """The user's initial labeled frames (init.data), as frozen at the run's start."""
        return _frames_if_present(self.user_data_file)

    @property
    def yardstick_file(self) -> Path:
        return self.data_dir / YARDSTICK_FILE

    def yardstick(self) -> list[Atoms]:
        """The independent yardstick: labeled frames that no model chose, never trained on."""
        return _frames_if_present(self.yardstick_file)

    @property
    def sampler_trajectory_file(self) -> Path:
        """The thermal sampler's whole MD trajectory (init.sampler), when it ran."""
        return self.init_dir("sample") / "trajectory.extxyz"

    @property
    def sampler_chosen_file(self) -> Path:
        """The thermal sampler's frames chosen for training, in their (diverse) order."""
        return self.init_dir("sample") / "chosen.extxyz"

    def sampler_frames(self) -> list[Atoms]:
        """The thermal sampler's chosen frames (none without a sampler)."""
        return _frames_if_present(self.sampler_chosen_file)

    @property
    def sampler_yardstick_file(self) -> Path:
        return self.data_dir / SAMPLER_YARDSTICK_FILE

    def yardstick_files(self) -> list[Path]:
        """The yardstick's files: the user's (examine.yardstick_data) and the thermal
        sampler's labeled random frames (init.sampler.n_yardstick), those that exist."""
        files = [self.yardstick_file, self.sampler_yardstick_file]
        return [f for f in files if f.is_file()]

    def stage_starts_file(self, stage: int) -> Path:
        return self.root / "starts" / f"stage-{stage}.extxyz"

    def stage_starts(self, stage: int) -> list[Atoms]:
        """A stage's own start structures (``starts: [files]``), as frozen at the run's start."""
        return _frames_if_present(self.stage_starts_file(stage))

    # --- stage reports -------------------------------------------------------------
    def report_path(self, directory: Path) -> Path:
        return directory / REPORT

    def read_report(self, directory: Path) -> dict[str, Any] | None:
        path = directory / REPORT
        return atomic.read_json(path) if path.is_file() else None

    def write_report(self, directory: Path, report: dict[str, Any]) -> None:
        atomic.write_json(directory / REPORT, report)

    def data_files(self) -> list[Path]:
        """Every training-data file, oldest first (the user's, init, then iterations); test
        frames excluded."""
        files = [self.user_data_file, self.data_dir / "init.extxyz"] + sorted(
            self.data_dir.glob("iter-*.extxyz")
        )
        return [f for f in files if f.is_file()]

    @property
    def test_data_dir(self) -> Path:
        """Held-out test frames, one file per iteration; never trained on."""
        return self.data_dir / "test"

    def test_data_file(self, iteration: int) -> Path:
        return self.test_data_dir / f"iter-{iteration:03d}.extxyz"

    def test_data_files(self, before: int | None = None) -> list[Path]:
        """Labeled test-frame files, oldest first (those of iterations < ``before``, if given)."""
        files = sorted(self.test_data_dir.glob("iter-*.extxyz"))
        if before is not None:
            files = [f for f in files if int(f.stem.removeprefix("iter-")) < before]
        return files

    def explored_files(self, iteration: int) -> list[Path]:
        """The walker trajectories of a finished exploration (empty if it has not finished)."""
        report = self.read_report(self.stage_dir(iteration, "explore"))
        if report is None:
            return []
        return [self.root / w["trajectory"] for w in report["walkers"]]

    def write_state(self, state: dict[str, Any]) -> None:
        atomic.write_json(self.state_path, state)

    def read_state(self) -> dict[str, Any]:
        if not self.state_path.is_file():
            raise EeltError(f"{self.root}: not an eelt run directory (no {STATE_FILE})")
        return atomic.read_json(self.state_path)


def _frames_if_present(path: Path) -> list[Atoms]:
    """The frames of an extxyz file; none when it is missing or empty."""
    return ase.io.read(path, ":") if path.is_file() and path.stat().st_size else []


def _same_structures(a: list[Atoms], b: list[Atoms]) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y)
        and (x.numbers == y.numbers).all()
        and np.allclose(x.positions, y.positions, atol=1e-6)
        and np.allclose(x.cell[:], y.cell[:], atol=1e-6)
        for x, y in zip(a, b, strict=False)
    )


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]
