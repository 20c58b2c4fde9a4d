"""Members trained together as one MemberStack equal their own runs (each a stack of one,
``train_member``), whichever members share their stack; float64."""

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from eelt.atomic import write_frames
from eelt.model import DeepPot, Ensemble
from eelt.train import MemberResult, TrainingDiverged, train_ensemble, train_member
from eelt.train.curves import read_curve
from eelt.train.stacked import train_stacked
from eelt.train.trainer import stack_groups, training_busy_s

from .conftest import TYPE_MAP, emt_frames, tiny_train

CU_AU = ["Cu", "Au"]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Equal results need equal kernels: one thread for every stack."""


@pytest.fixture(scope="module")
def cu_au_data(tmp_path_factory) -> str:
    """30 EMT-labeled Cu/Au cells with varying composition, so members' batches hold
    different numbers of each element (ghost atoms in the stack's layout)."""
    rng = np.random.default_rng(3)
    frames = []
    for atoms in emt_frames(30, seed=2):
        symbols = np.array(atoms.get_chemical_symbols())
        symbols[rng.random(len(atoms)) < 0.3] = "Au"
        atoms.set_chemical_symbols(symbols)
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    path = tmp_path_factory.mktemp("cuau") / "cuau.extxyz"
    write_frames(path, frames)
    return str(path)


def weights(path) -> dict[str, torch.Tensor]:
    return DeepPot.load(path).state_dict()


def assert_same_model(a, b, rtol=1e-9):
    """Two checkpoints equal to float64 round-off (amplified by a few dozen Adam steps)."""
    wa, wb = weights(a), weights(b)
    for key in wa:
        scale = float(wa[key].abs().max()) or 1.0
        assert float((wa[key] - wb[key]).abs().max()) <= rtol * scale, key


def assert_same_curve(a, b, rtol=1e-9):
    rows_a, rows_b = read_curve(a), read_curve(b)
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key in ra:
            if key != "wall_s":
                assert ra[key] == pytest.approx(rb[key], rel=rtol, nan_ok=True), key


def same_result(a: MemberResult, b: MemberResult) -> None:
    """Equal results but for wall time and checkpoint path; errors to round-off."""
    da, db = a.to_dict(), b.to_dict()
    for key in ("wall_s", "checkpoint"):
        da.pop(key), db.pop(key)
    floats = [k for k, v in da.items() if isinstance(v, float)]
    assert {k: da[k] for k in floats} == pytest.approx({k: db[k] for k in floats}, rel=1e-9)
    assert {k: v for k, v in da.items() if k not in floats} == {
        k: v for k, v in db.items() if k not in floats
    }


@pytest.mark.parametrize("packed", [True, False])
def test_each_member_of_a_stack_equals_its_own_run(cu_au_data, tmp_path, packed):
    """The strongest form: three members with their own seeds and data orders (Cu/Au frames
    of varying composition: ghost atoms), trained together, each equal to a stack of one with
    its seed; and different from each other."""
    cfg = tiny_train(steps=40)
    seeds = [0, 1, 2]
    paths = [tmp_path / f"stacked-{s}.pt" for s in seeds]
    results = train_stacked([cu_au_data], paths, cfg, CU_AU, seeds, packed=packed)
    for seed, path, result in zip(seeds, paths, results, strict=True):
        alone = train_member([cu_au_data], tmp_path / f"alone-{seed}.pt", cfg, CU_AU, seed=seed)
        same_result(alone, result)
        assert_same_model(tmp_path / f"alone-{seed}.pt", path)
        assert_same_curve(tmp_path / f"alone-{seed}.csv", path.with_suffix(".csv"))
    w0, w1 = weights(paths[0]), weights(paths[1])
    assert any(not torch.allclose(w0[k], w1[k]) for k in w0 if "weights" in k)
    assert results[0].val_force_rmse_meV_per_A != results[1].val_force_rmse_meV_per_A


def test_a_member_does_not_depend_on_its_stack_mates(cu_au_data, tmp_path):
    """Member 1 (seed 1) trained beside seed 0, beside seeds 7 and 8, and alone: one model."""
    cfg = tiny_train(steps=30)
    for name, seeds in (("a", [0, 1]), ("b", [7, 1, 8]), ("c", [1])):
        paths = [tmp_path / f"{name}-{s}.pt" for s in seeds]
        train_stacked([cu_au_data], paths, cfg, CU_AU, seeds)
    assert_same_model(tmp_path / "a-1.pt", tmp_path / "c-1.pt")
    assert_same_model(tmp_path / "b-1.pt", tmp_path / "c-1.pt")
    assert_same_curve(tmp_path / "b-1.csv", tmp_path / "c-1.csv")


def test_virial_term_stacked_equals_alone(cu_data, tmp_path):
    """With the virial term (Cu cells of 4 and 8 atoms: batches of unequal size, ghost atoms)."""
    cfg = tiny_train(steps=20, start_pref_v=1.0, limit_pref_v=1.0)
    paths = [tmp_path / "s0.pt", tmp_path / "s1.pt"]
    results = train_stacked([cu_data], paths, cfg, TYPE_MAP, [5, 6])
    for seed, path, result in zip([5, 6], paths, results, strict=True):
        alone = train_member([cu_data], tmp_path / f"a{seed}.pt", cfg, TYPE_MAP, seed=seed)
        same_result(alone, result)
        assert_same_model(tmp_path / f"a{seed}.pt", path)


@pytest.mark.parametrize("anneal", [0.0, 0.1])
def test_patience_stops_members_as_their_own_runs(cu_data, tmp_path, anneal):
    """Members stop at different steps (measured 159, 138, 180 of 300 without an anneal), each
    as alone: with an anneal, each on its own learning rate and prefactors in the stack."""
    cfg = tiny_train(steps=300, patience_steps=30, patience_anneal_fraction=anneal)
    seeds = [0, 1, 2]
    paths = [tmp_path / f"s{s}.pt" for s in seeds]
    results = train_stacked([cu_data], paths, cfg, TYPE_MAP, seeds)
    steps = [r.steps for r in results]
    assert len(set(steps)) > 1 and max(steps) < 300
    for seed, path, result in zip(seeds, paths, results, strict=True):
        alone = train_member([cu_data], tmp_path / f"a{seed}.pt", cfg, TYPE_MAP, seed=seed)
        assert alone.steps == result.steps
        assert_same_model(tmp_path / f"a{seed}.pt", path, rtol=1e-8)
        rows = read_curve(path.with_suffix(".csv"))
        assert rows[-1]["step"] == result.steps


def test_patience_on_a_plateau_and_bounded_by_steps(cu_data, tmp_path):
    """A learning rate too small to move the weights: no improvement, so the run stops
    ``patience_steps`` after step 0; a patience longer than the run never stops it."""
    flat = tiny_train(
        steps=200, start_lr=1e-12, stop_lr=1e-12, patience_steps=20, patience_anneal_fraction=0
    )
    (plateau,) = train_stacked([cu_data], [tmp_path / "p.pt"], flat, TYPE_MAP, [0])
    assert plateau.steps == 20
    assert read_curve(tmp_path / "p.csv")[-1]["step"] == 20
    alone = train_member([cu_data], tmp_path / "a.pt", flat, TYPE_MAP, seed=0)
    assert alone.steps == 20
    annealed = flat.model_copy(update={"patience_anneal_fraction": 0.25})  # 50 steps
    (plateau,) = train_stacked([cu_data], [tmp_path / "q.pt"], annealed, TYPE_MAP, [0])
    assert plateau.steps == 20 + 50
    patient = tiny_train(steps=40, patience_steps=1000)
    (full,) = train_stacked([cu_data], [tmp_path / "f.pt"], patient, TYPE_MAP, [0])
    assert full.steps == 40


def test_warm_stacked_equals_warm_members(cu_data, tmp_path):
    cfg = tiny_train(steps=30)
    prev = [tmp_path / f"prev-{m}.pt" for m in range(2)]
    train_stacked([cu_data], prev, cfg, TYPE_MAP, [0, 1])
    warm = train_stacked(
        [cu_data],
        [tmp_path / "w0.pt", tmp_path / "w1.pt"],
        cfg,
        TYPE_MAP,
        [0, 1],
        init_from=prev,
        steps=20,
        start_lr=3e-4,
    )
    for m in range(2):
        alone = train_member(
            [cu_data], tmp_path / f"a{m}.pt", cfg, TYPE_MAP, m, prev[m], 20, 3e-4, member=m
        )
        same_result(alone, warm[m])
        assert warm[m].init_from == str(prev[m]) and warm[m].steps == 20
        assert_same_model(tmp_path / f"a{m}.pt", tmp_path / f"w{m}.pt")


def test_warm_start_needs_one_architecture(cu_data, tmp_path):
    train_stacked([cu_data], [tmp_path / "a.pt"], tiny_train(steps=5), TYPE_MAP, [0])
    wider = tiny_train(steps=5).model.model_copy(update={"fitting_widths": [16, 16]})
    train_stacked([cu_data], [tmp_path / "b.pt"], tiny_train(steps=5, model=wider), TYPE_MAP, [1])
    with pytest.raises(ValueError, match="fitting_widths.*one architecture"):
        train_stacked(
            [cu_data],
            [tmp_path / "c.pt", tmp_path / "d.pt"],
            tiny_train(),
            TYPE_MAP,
            [0, 1],
            init_from=[tmp_path / "a.pt", tmp_path / "b.pt"],
            steps=5,
        )


def test_a_diverged_member_leaves_the_others_unchanged(cu_data, tmp_path):
    """Member 1 starts from NaN weights: it diverges at step 0, member 0 trains as alone."""
    cfg = tiny_train(steps=20)
    prev = [tmp_path / f"prev-{m}.pt" for m in range(2)]
    train_stacked([cu_data], prev, cfg, TYPE_MAP, [0, 1])
    broken = DeepPot.load(prev[1])
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))
    broken.save(prev[1])
    out = [tmp_path / "n0.pt", tmp_path / "n1.pt"]
    ok, bad = train_stacked([cu_data], out, cfg, TYPE_MAP, [0, 1], init_from=prev, steps=10)
    assert isinstance(bad, TrainingDiverged)
    assert str(bad) == "member 1 (seed 1): loss became NaN at step 0"
    assert not out[1].exists()
    train_member([cu_data], tmp_path / "a0.pt", cfg, TYPE_MAP, 0, prev[0], 10, member=0)
    assert_same_model(tmp_path / "a0.pt", out[0])
    assert ok.steps == 10


def test_train_ensemble_stacked_resumes_the_missing_members(cu_data, tmp_path):
    """One job: a checkpoint, curve and metrics per member; a resume trains only the missing
    member, as it would have trained in the full stack."""
    cfg = tiny_train(steps=30, ensemble_size=3)
    out = tmp_path / "iter-000"
    with ThreadPoolExecutor(2) as pool:
        results = train_ensemble([cu_data], out, cfg, TYPE_MAP, pool)
        first = {m: weights(out / f"model-{m}.pt") for m in range(3)}
        metrics = json.loads((out / "metrics.json").read_text())
        assert [d["member"] for d in metrics["members"]] == [0, 1, 2]
        assert [d["seed"] for d in metrics["members"]] == [0, 1, 2]
        assert Ensemble.load(out).n_members == 3
        assert (out / "learning_curves.png").is_file()

        (out / "model-1.pt").unlink()
        mtime0 = (out / "model-0.pt").stat().st_mtime_ns
        again = train_ensemble([cu_data], out, cfg, TYPE_MAP, pool)
    assert (out / "model-0.pt").stat().st_mtime_ns == mtime0
    assert again[0].to_dict() == results[0].to_dict()
    same_result(again[1], results[1])
    for key, value in weights(out / "model-1.pt").items():
        torch.testing.assert_close(value, first[1][key], rtol=1e-9, atol=1e-12)


class _DaskLikeExecutor:
    """What stack_groups reads of a Dask client's executor: its client and job resources."""

    def __init__(self, threads: list[int], resources: dict | None = None):
        self._client = self
        self._kwargs = {"resources": resources} if resources else {}
        self.threads = threads

    def nthreads(self) -> dict[str, int]:
        return {f"tcp://worker-{k}": n for k, n in enumerate(self.threads)}


def test_stack_groups():
    members = [0, 1, 2, 3]
    with ThreadPoolExecutor(4) as pool:
        assert stack_groups(members, "auto", pool) == [members]  # threads share one interpreter
        assert stack_groups(members, 2, pool) == [[0, 1], [2, 3]]
    assert stack_groups(members, "auto", _DaskLikeExecutor([1, 1])) == [[0, 1], [2, 3]]
    assert stack_groups([1, 3], "auto", _DaskLikeExecutor([1, 1, 1])) == [[1], [3]]
    assert stack_groups(members, "auto", _DaskLikeExecutor([2, 2], {"GPU": 1})) == [members]
    assert stack_groups([], "auto", _DaskLikeExecutor([2])) == []


def test_two_stacks_train_the_members_of_one(cu_data, tmp_path):
    """stacks: 2 runs two jobs of two members; each member as in a stack of all four."""
    cfg = tiny_train(steps=20, ensemble_size=4)
    with ThreadPoolExecutor(2) as pool:
        for stacks in (1, 2):
            out = tmp_path / f"stacks-{stacks}"
            update = {"stacks": stacks}
            train_ensemble([cu_data], out, cfg.model_copy(update=update), TYPE_MAP, pool)
    for m in range(4):
        assert_same_model(
            tmp_path / "stacks-1" / f"model-{m}.pt", tmp_path / "stacks-2" / f"model-{m}.pt"
        )


def test_a_member_on_a_plateau_anneals_to_stop_lr_before_it_stops(cu_data, tmp_path):
    """Once patience runs out at step p with learning rate lr_p, the learning rate falls from
    lr_p to stop_lr over patience_anneal_fraction x steps (exponentially, as the schedule), and
    the member stops there, well before ``steps``."""
    from eelt.train.loss import learning_rate

    cfg = tiny_train(
        steps=4000, start_lr=1e-12, stop_lr=1e-14, patience_steps=40, patience_anneal_fraction=0.05
    )
    path = tmp_path / "m.pt"
    (result,) = train_stacked([cu_data], [path], cfg, TYPE_MAP, [0])
    rows = read_curve(path.with_suffix(".csv"))
    p = 40  # no improvement at such a learning rate: patience ends at its first chance
    assert result.steps == p + 200
    lr_p = learning_rate(p, 4000, 1e-12, 1e-14)
    for row in rows:
        if p < row["step"] < p + 200:
            want = learning_rate(row["step"] - p, 200, lr_p, 1e-14)
            assert row["lr"] == pytest.approx(want, rel=1e-9), row["step"]
    assert rows[-1]["lr"] == pytest.approx(1e-14, rel=1e-9)


def test_training_busy_s_counts_each_stack_once():
    """Members of one stack each report the stack's wall time; NaN: trained by an earlier call."""
    members = [{"member": m, "wall_s": w} for m, w in enumerate([10.0, 10.0, 4.0, float("nan")])]
    cfg = tiny_train(ensemble_size=4)
    with ThreadPoolExecutor(1) as pool:
        assert training_busy_s(members, cfg, pool) == 10.0  # one stack of four
        two = cfg.model_copy(update={"stacks": 2})
        assert training_busy_s(members, two, pool) == 10.0 + 4.0
