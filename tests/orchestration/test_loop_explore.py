"""The loop's exploration controls with real stages (EMT labels, tiny ensemble, thread pool):
per-stage starts, NPT sweeps, the user's initial data, walkers kept on resume."""

from concurrent.futures import ThreadPoolExecutor

import ase.io
import numpy as np
import pytest
from ase.build import bulk

from eelt.errors import EeltError
from eelt.explore import read_trajectory
from eelt.orchestration.context import RunContext
from eelt.orchestration.progress import Slot
from eelt.orchestration.runs import prepare_run, run_loop
from eelt.orchestration.synchronous import explore, explore_starts
from tests.loop_config import cu_start, labeled_cu, tiny_config

TWO_STAGES = {
    "stages": [
        {"temperatures_K": [300, 900], "n_steps": 30, "timestep_fs": 2.0, "dump_interval": 5,
         "max_iterations": 1},
        {"temperatures_K": [300], "ensemble": "npt", "pressures_bar": [0, 20000], "n_steps": 30,
         "timestep_fs": 2.0, "dump_interval": 5, "max_iterations": 1, "starts": "last",
         "barostat_time_fs": 100.0},
    ]
}  # fmt: skip


def run_tiny(tmp_path, **overrides):
    cfg = tiny_config(cu_start(tmp_path), **overrides)
    run = prepare_run(cfg, tmp_path, tmp_path / "run")
    with ThreadPoolExecutor(2) as pool:
        loop = RunContext(run, pool)
        state = run_loop(loop)
    return run, state


@pytest.fixture(scope="module")
def two_stage_run(tmp_path_factory):
    return run_tiny(tmp_path_factory.mktemp("explore"), explore=TWO_STAGES)


def test_a_stage_starts_from_the_last_frames_of_the_previous_iteration(two_stage_run):
    run, state = two_stage_run
    first = run.read_report(run.stage_dir(0, "explore"))
    second = run.read_report(run.stage_dir(1, "explore"))
    assert first["starts"] == "system" and first["n_starts"] == 1
    assert second["starts"] == "last frames of iteration 0" and second["n_starts"] == 2
    last = [read_trajectory(run.root / w["trajectory"])[-1] for w in first["walkers"]]
    starts = ase.io.read(run.stage_dir(1, "explore") / "starts.xyz", ":")
    for a, b in zip(last, starts, strict=True):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)
    # 2 starts x 1 temperature x 2 pressures; each walker's first frame is its start
    names = [w["walker"] for w in second["walkers"]]
    assert names == ["w000-s0-T300-P0", "w001-s0-T300-P20000", "w002-s1-T300-P0",
                     "w003-s1-T300-P20000"]  # fmt: skip
    for w in second["walkers"]:
        frames = read_trajectory(run.root / w["trajectory"])
        s = int(w["walker"].split("-s")[1][0])
        np.testing.assert_allclose(frames[0].positions, starts[s].positions, atol=1e-6)
        assert frames[-1].info["pressure_bar"] in (0.0, 20000.0)
        assert (run.root / w["plot"]).is_file()
    assert state["status"] == "max_iterations"


def test_uncertain_starts_are_the_most_uncertain_accurate_frames(two_stage_run, tmp_path):
    import shutil

    from eelt import atomic
    from eelt.orchestration.rundir import RunDir

    run = RunDir(shutil.copytree(two_stage_run[0].root, tmp_path / "copy"))
    frames = [f for p in run.explored_files(0) for f in read_trajectory(p)]
    devi = np.array([f.info["max_devi_f"] for f in frames])
    # put trust_lo at the median, so that half of the frames are accurate
    exam_path = run.stage_dir(0, "examine") / "report.json"
    exam = atomic.read_json(exam_path)
    exam["trust_lo_eV_per_A"] = lo = float(np.median(devi))
    atomic.write_json(exam_path, exam)
    loop = RunContext(run, None)
    stages = list(loop.config.explore.stages)
    stages[1] = stages[1].model_copy(update={"starts": "uncertain", "max_starts": 3})
    loop.config = loop.config.model_copy(
        update={"explore": loop.config.explore.model_copy(update={"stages": stages})}
    )
    starts, source = explore_starts(loop, Slot(1, 1, 0))
    assert source == "most uncertain accurate frames of iteration 0"
    expected = np.sort(devi[devi < lo])[::-1][:3]
    assert [s.info["from_max_devi_f"] for s in starts] == pytest.approx(expected)
    assert len(starts) == 3


def test_a_stage_with_its_own_start_files(tmp_path):
    other = tmp_path / "cu-strained.extxyz"
    bulk("Cu", "fcc", a=3.7, cubic=True).write(other)
    stage = dict(TWO_STAGES["stages"][0], starts=[str(other)])
    run, _ = run_tiny(tmp_path, explore={"stages": [stage]}, loop={"max_iterations": 1})
    frozen = ase.io.read(run.stage_starts_file(0), ":")
    assert frozen[0].cell.lengths() == pytest.approx([3.7] * 3)
    report = run.read_report(run.stage_dir(0, "explore"))
    assert report["starts"] == "stage files"
    first = read_trajectory(run.root / report["walkers"][0]["trajectory"])[0]
    assert first.cell.lengths() == pytest.approx([3.7] * 3)


def test_npt_stage_on_a_molecule_is_a_user_error(tmp_path):
    from ase.build import molecule

    path = tmp_path / "h2o.xyz"
    molecule("H2O").write(path)
    stage = dict(TWO_STAGES["stages"][1], starts="system")
    cfg = tiny_config(path, explore={"stages": [stage]})
    with pytest.raises(
        EeltError, match="explore.stages.0: ensemble 'npt' needs structures periodic"
    ):
        prepare_run(cfg, tmp_path, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_user_data_as_the_only_initial_data(tmp_path):
    import dpdata

    ase.io.write(tmp_path / "mine.extxyz", labeled_cu(4))
    system = dpdata.LabeledSystem()
    for atoms in labeled_cu(3, seed=10):
        system.append(dpdata.LabeledSystem(atoms, fmt="ase/structure"))
    system.to("deepmd/npy", str(tmp_path / "mine-deepmd"))
    run, state = run_tiny(
        tmp_path,
        init={"n_perturbed": 0, "data": ["mine.extxyz", "mine-deepmd"]},
        loop={"max_iterations": 1},
    )
    init = run.read_report(run.init_dir("label"))
    assert init["n_requested"] == 0 and init["n_user_frames"] == 7
    user = ase.io.read(run.user_data_file, ":")
    assert len(user) == 7
    ref = labeled_cu(3, seed=10)
    np.testing.assert_allclose(user[4].get_forces(), ref[0].get_forces(), atol=1e-6)
    assert user[4].get_potential_energy() == pytest.approx(ref[0].get_potential_energy(), abs=1e-6)
    assert run.read_report(run.init_dir("train"))["n_frames"] == 7
    assert state["status"] == "max_iterations"


@pytest.mark.parametrize(
    "spoil, match",
    [
        (
            lambda a: a.calc.results.update(energy=float("nan")),
            "mine.extxyz frame 1: energy is not finite",
        ),
        (lambda a: setattr(a, "calc", None), "mine.extxyz frame 1: no energy and forces"),
    ],
)
def test_bad_user_data_is_named(tmp_path, spoil, match):
    frames = labeled_cu(3)
    spoil(frames[1])
    ase.io.write(tmp_path / "mine.extxyz", frames)
    cfg = tiny_config(cu_start(tmp_path), init={"data": ["mine.extxyz"]})
    with pytest.raises(EeltError, match=f"init.data: {match}"):
        prepare_run(cfg, tmp_path, tmp_path / "run")


def test_resume_does_not_rerun_finished_walkers(tmp_path):
    run, _ = run_tiny(tmp_path, loop={"max_iterations": 1})
    out = run.stage_dir(0, "explore")
    report = run.read_report(out)
    kept, redo = report["walkers"]
    (out / "report.json").unlink()  # a crash during exploration, one walker unfinished
    (run.root / redo["trajectory"]).with_suffix(".summary.json").unlink()
    before = {
        w["walker"]: (run.root / w["trajectory"]).stat().st_mtime_ns for w in report["walkers"]
    }
    with ThreadPoolExecutor(2) as pool:
        again = explore(RunContext(run, pool), Slot(0, 0, 0))
    after = {w["walker"]: (run.root / w["trajectory"]).stat().st_mtime_ns for w in again["walkers"]}
    assert after[kept["walker"]] == before[kept["walker"]]
    assert after[redo["walker"]] != before[redo["walker"]]
    assert again["n_frames"] == report["n_frames"]  # same seeds: the same walker again


def test_a_metadynamics_stage_records_cvs_hills_and_free_energy(tmp_path):
    stage = dict(
        TWO_STAGES["stages"][0],
        n_steps=60,
        biases=[
            {"kind": "metadynamics", "cvs": [{"kind": "distance", "atoms": [0, 1], "name": "d01"}],
             "sigma": [0.05], "height_eV": 0.05, "pace_steps": 10, "biasfactor": 5},
            {"kind": "uncertainty", "strength": 0.5},
        ],
    )  # fmt: skip
    run, _ = run_tiny(tmp_path, explore={"stages": [stage]}, loop={"max_iterations": 1})
    report = run.read_report(run.stage_dir(0, "explore"))
    for w in report["walkers"]:
        frames = read_trajectory(run.root / w["trajectory"])
        d01 = [f.get_distance(0, 1) for f in frames]
        assert [f.info["cv_d01"] for f in frames] == pytest.approx(d01, abs=1e-5)
        assert frames[0].info["bias_energy"] <= 0.0  # no hill yet; the uncertainty bias is < 0
        assert any(p.endswith(".hills") for p in w["extra_files"])
        assert any(p.endswith(".fes.npz") for p in w["extra_files"])
        hills = np.loadtxt(run.root / next(p for p in w["extra_files"] if p.endswith(".hills")))
        assert hills.shape == (6, 5)  # a hill every 10 of 60 steps: time, d01, sigma, height, biasf
        fes = np.load(run.root / next(p for p in w["extra_files"] if p.endswith(".fes.npz")))
        assert fes["free_energy_eV"].min() == 0.0 and fes["free_energy_eV"].max() > 0.0


def test_a_cv_atom_out_of_range_is_a_user_error(tmp_path):
    stage = dict(
        TWO_STAGES["stages"][0],
        biases=[{"kind": "metadynamics", "cvs": [{"kind": "distance", "atoms": [0, 4]}],
                 "sigma": [0.05]}],
    )  # fmt: skip
    cfg = tiny_config(cu_start(tmp_path), explore={"stages": [stage]})
    with pytest.raises(EeltError, match=r"biases.0.cvs.0: atom index 4 is out of range .* 4 atoms"):
        prepare_run(cfg, tmp_path, tmp_path / "run")
