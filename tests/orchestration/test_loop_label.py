"""The loop's labeling policy: a failed share above label.max_failed_fraction stops the run
with one line, every finished label kept."""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

import pytest
from ase import Atoms

from eelt.errors import EeltError
from eelt.label import EMTLabeler, LabelError
from eelt.orchestration.context import RunContext
from eelt.orchestration.initial import init_label
from eelt.orchestration.runs import prepare_run
from tests.loop_config import cu_start, tiny_config


@dataclass(frozen=True)
class HalfBroken:
    """EMT, except that frames whose atom 0 moved to x > 0 fail with an SCF-like error."""

    name: ClassVar[str] = "half-broken-emt"

    def settings(self) -> dict:
        return {"labeler": self.name}

    def __call__(self, atoms: Atoms) -> Atoms:
        if atoms.positions[0, 0] > 0:
            raise LabelError("SCF not converged (test)", kind="scf_not_converged")
        return EMTLabeler()(atoms)


@pytest.mark.parametrize("limit", [0.2, 1.0])
def test_failed_share_above_the_limit_stops_the_run(tmp_path, monkeypatch, limit):
    monkeypatch.setattr("eelt.orchestration.context.job_labeler", lambda config: HalfBroken())
    cfg = tiny_config(cu_start(tmp_path), label={"kind": "emt", "max_failed_fraction": limit})
    run = prepare_run(cfg, tmp_path, tmp_path / "run")
    with ThreadPoolExecutor(2) as pool:
        loop = RunContext(run, pool)
        if limit < 1.0:
            with pytest.raises(
                EeltError, match=r"label: \d+ of 7 labels failed in init/label"
            ) as e:
                init_label(loop)
            assert "> label.max_failed_fraction 0.2; scf_not_converged" in str(e.value)
            assert "\n" not in str(e.value)
            assert not (run.init_dir("label") / "report.json").exists()  # runs again on resume
            assert list(run.labels_dir.glob("*.extxyz"))  # the finished labels are kept
        else:
            report = init_label(loop)
            assert report["failed_by_kind"] == {"scf_not_converged": report["n_failed"]}
            assert 0 < report["n_failed"] < 7


def test_failure_policy_may_change_on_resume(tmp_path):
    cfg = tiny_config(cu_start(tmp_path))
    run = prepare_run(cfg, tmp_path, tmp_path / "run")
    looser = tiny_config(
        cu_start(tmp_path), label={"kind": "emt", "max_failed_fraction": 0.9, "timeout_s": 60}
    )
    assert prepare_run(looser, tmp_path, tmp_path / "run").root == run.root


def test_a_shared_label_store_computes_nothing_twice(tmp_path):
    from eelt.orchestration.runs import run_loop

    def run(name):
        cfg = tiny_config(
            cu_start(tmp_path), name=name, label={"kind": "emt", "store": "shared-labels"},
            loop={"max_iterations": 1},
        )  # fmt: skip
        r = prepare_run(cfg, tmp_path, tmp_path / name)
        with ThreadPoolExecutor(2) as pool:
            run_loop(RunContext(r, pool))
        return r

    first = run("first")
    assert first.labels_dir == (tmp_path / "shared-labels").resolve()
    n_labels = len(list(first.labels_dir.glob("*.extxyz")))
    assert n_labels > 0 and not (first.root / "labels").exists()
    second = run("second")  # same frames, same method: every label is already in the store
    init = second.read_report(second.init_dir("label"))
    assert init["n_computed"] == 0 and init["n_cached"] == init["n_requested"]
    it0 = second.read_report(second.stage_dir(0, "label"))
    assert it0["n_computed"] == 0
    assert len(list(first.labels_dir.glob("*.extxyz"))) == n_labels
