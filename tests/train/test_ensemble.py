import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from eelt.config import TrainConfig, parse_section
from eelt.errors import EeltError
from eelt.model import DeepPot, Ensemble
from eelt.train import TrainingDiverged, train_ensemble

from .conftest import TYPE_MAP, tiny_train


def test_train_ensemble_threads_then_resume_and_warm(cu_data, tmp_path):
    cfg = tiny_train(steps=30, ensemble_size=2, warm_steps=10)
    out = tmp_path / "iter-000"
    with ThreadPoolExecutor(2) as pool:
        results = train_ensemble([cu_data], out, cfg, TYPE_MAP, pool)
        assert [r.member for r in results] == [0, 1]
        for m in range(2):
            assert (out / f"model-{m}.pt").is_file() and (out / f"model-{m}.csv").is_file()
        assert (out / "learning_curves.png").stat().st_size > 1000
        metrics = json.loads((out / "metrics.json").read_text())
        assert [d["member"] for d in metrics["members"]] == [0, 1]
        assert metrics["members"][0]["seed"] != metrics["members"][1]["seed"]
        assert metrics["ensemble"]["n_members"] == 2
        ens = Ensemble.load(out)
        assert ens.n_members == 2

        # resume: the existing checkpoint is kept, only the missing member trains
        (out / "model-1.pt").unlink()
        mtime0 = (out / "model-0.pt").stat().st_mtime_ns
        again = train_ensemble([cu_data], out, cfg, TYPE_MAP, pool)
        assert (out / "model-0.pt").stat().st_mtime_ns == mtime0
        assert (out / "model-1.pt").is_file()
        assert again[0].to_dict() == results[0].to_dict()

        # warm start from the previous ensemble: warm_steps at warm_start_lr
        warm = train_ensemble(
            [cu_data], tmp_path / "iter-001", cfg, TYPE_MAP, pool, init_dir=out, warm=True
        )
        assert [r.steps for r in warm] == [10, 10]
        assert warm[1].init_from == str(out / "model-1.pt")


def test_train_ensemble_lists_diverged_members(cu_data, tmp_path):
    bad = tiny_train(steps=100, start_lr=1e3, stop_lr=1e2, ensemble_size=2)
    with ThreadPoolExecutor(2) as pool:
        with pytest.raises(
            TrainingDiverged, match=r"2 of 2 members diverged \(members \[0, 1\]\)"
        ) as err:
            train_ensemble([cu_data], tmp_path / "bad", bad, TYPE_MAP, pool)
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "bad").glob("model-*.pt"))


def test_one_member_diverges_the_other_finishes(cu_data, tmp_path):
    """Warm start from a previous ensemble whose member 1 holds NaN weights."""
    cfg = tiny_train(steps=20, ensemble_size=2, warm_steps=10)
    prev = tmp_path / "prev"
    with ThreadPoolExecutor(2) as pool:
        train_ensemble([cu_data], prev, cfg, TYPE_MAP, pool)
        broken = DeepPot.load(prev / "model-1.pt")
        with torch.no_grad():
            next(broken.parameters()).fill_(float("nan"))
        broken.save(prev / "model-1.pt")
        out = tmp_path / "next"
        with pytest.raises(TrainingDiverged) as err:
            train_ensemble([cu_data], out, cfg, TYPE_MAP, pool, init_dir=prev, warm=True)
    assert str(err.value).startswith("1 of 2 members diverged (members [1]): member 1 (seed 1)")
    assert "loss became NaN at step 0" in str(err.value)
    assert (out / "model-0.pt").is_file() and not (out / "model-1.pt").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert [d["member"] for d in metrics["members"]] == [0]
    assert (out / "learning_curves.png").is_file()


def test_warm_needs_previous_checkpoints(cu_data, tmp_path):
    with ThreadPoolExecutor(1) as pool, pytest.raises(FileNotFoundError, match="model-0.pt"):
        train_ensemble(
            [cu_data],
            tmp_path / "b",
            tiny_train(),
            TYPE_MAP,
            pool,
            init_dir=tmp_path / "none",
            warm=True,
        )


def test_train_mode_was_removed():
    """An old config that asks for per-member training gets one line naming the field; an
    older run's frozen ``mode: stacked`` (what every run does now) still loads, so it resumes."""
    want = "train.mode was removed: members always train as stacks (train.stacks)"
    with pytest.raises(EeltError) as err:
        parse_section(TrainConfig, {"mode": "members", "steps": 10}, "train")
    assert str(err.value) == want
    old = parse_section(TrainConfig, {"mode": "stacked", "steps": 10}, "train")
    assert old == parse_section(TrainConfig, {"steps": 10}, "train")
