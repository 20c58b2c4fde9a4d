"""The eelt loop as a Prefect flow: one flow run per ``eelt run``, a subflow per iteration,
the stages as tasks.

Stages persist their own results in the run directory and skip finished work, so a
Prefect retry or a resumed flow never recomputes a finished stage; Prefect's own result
persistence and caching are therefore off. Dask workers run plain eelt functions (DFT
jobs, walkers, training members) submitted by the stage tasks, never Prefect tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from eelt.config import load_config
from eelt.execution import open_executor
from eelt.loop import Loop, prepare_run, run_loop

T = TypeVar("T")

# Every stage resumes from the run directory, so one retry is always safe.
STAGE_RETRIES = 1


def _call(body: Callable[[], T]) -> T:
    return body()


def _artifact_key(*parts: str) -> str:
    return "-".join(parts).lower().replace("_", "-").replace(".", "-")


class PrefectRunner:
    """Runs each stage as a Prefect task and each iteration as a subflow, with UI artifacts."""

    def __init__(self, run_name: str):
        self.run_name = run_name

    def stage(self, name: str, body: Callable[[], T]) -> T:
        stage_task = task(
            _call,
            name=name,
            cache_policy=NO_CACHE,
            retries=STAGE_RETRIES,
            retry_delay_seconds=2,
            persist_result=False,
        )
        return stage_task(body)

    def iteration(self, index: int, body: Callable[[], T]) -> T:
        iteration_flow = flow(
            _call,
            name="eelt-iteration",
            flow_run_name=f"{self.run_name}-iteration-{index:03d}",
            persist_result=False,
            validate_parameters=False,
        )
        record = iteration_flow(body)
        self._iteration_artifact(index, record)
        return record

    def _iteration_artifact(self, index: int, record: dict[str, Any]) -> None:
        exam = record["examine"]
        rows = [
            {"quantity": "frames explored", "value": exam["n_total"]},
            {"quantity": "accurate ratio", "value": round(exam["accurate_ratio"], 4)},
            {"quantity": "candidate ratio", "value": round(exam["candidate_ratio"], 4)},
            {"quantity": "failed ratio", "value": round(exam["failed_ratio"], 4)},
            {"quantity": "candidates selected", "value": exam["n_selected"]},
            {"quantity": "converged", "value": exam["converged"]},
        ]
        if "label" in record:
            rows += [
                {"quantity": "labels done", "value": record["label"]["n_labeled"]},
                {
                    "quantity": "test frames labeled",
                    "value": record["label"].get("n_test_labeled", 0),
                },
                {"quantity": "labels failed", "value": record["label"]["n_failed"]},
            ]
        calibration = record.get("calibrate", {})
        explorer = calibration.get("explorer_test", {})
        cal = calibration.get("calibration", {})
        for quantity, value, digits in (
            ("explorer test force RMSE (meV/A)", explorer.get("force_rmse_meV_per_A"), 2),
            ("explorer test energy RMSE (meV/atom)", explorer.get("energy_rmse_meV_per_atom"), 3),
            ("deviation-error Spearman", cal.get("spearman"), 3),
            ("deviation at the target error (eV/A)", cal.get("crossing_eV_per_A"), 4),
        ):
            if value is not None:
                rows.append({"quantity": quantity, "value": round(value, digits)})
        train = record.get("train", {})
        if "val_force_rmse_meV_per_A" in train:
            rows += [
                {
                    "quantity": "validation energy RMSE (meV/atom)",
                    "value": round(train["val_energy_rmse_meV_per_atom"], 3),
                },
                {
                    "quantity": "validation force RMSE (meV/A)",
                    "value": round(train["val_force_rmse_meV_per_A"], 2),
                },
            ]
        test = train.get("test", {})
        if test.get("force_rmse_meV_per_A") is not None:
            rows.append(
                {
                    "quantity": f"new ensemble test force RMSE (meV/A, {test['n_frames']} frames)",
                    "value": round(test["force_rmse_meV_per_A"], 2),
                }
            )
        create_table_artifact(
            rows,
            key=_artifact_key(self.run_name, f"iteration-{index:03d}"),
            description=f"{self.run_name}, iteration {index}: examination, labels and training",
        )


def _history_markdown(state: dict[str, Any]) -> str:
    def fmt(value, spec=".1f"):
        return "-" if value is None else format(value, spec)

    lines = [
        f"# eelt run `{state['name']}`: {state['status']}",
        "",
        f"{state.get('status_detail', '')}",
        "",
        f"Labels: {state.get('n_labels', state['n_init_labeled'])} ({state['n_init_labeled']} "
        f"initial, {state.get('n_train_labels', 0)} for training, {state.get('n_test_labels', 0)} "
        f"held-out test frames), DFT {state.get('dft_core_hours', 0.0):.2f} core-hours; "
        f"models: `{state['models_dir']}`",
        "",
        "| iteration | stage | explored | accurate | candidate | failed | labeled + test | labels "
        "total | explorer test F RMSE (meV/A) | new test F RMSE (meV/A) | val. F RMSE (meV/A) | "
        "Spearman |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for h in state["iterations"]:
        lines.append(
            f"| {h['iteration']} | {h['stage']} | {h['n_explored']} | {h['accurate_ratio']:.3f} | "
            f"{h['candidate_ratio']:.3f} | {h['failed_ratio']:.3f} | {h['n_labeled']} + "
            f"{h.get('n_test_labeled', 0)} | {h.get('labels_total', '-')} | "
            f"{fmt(h.get('explorer_test_force_rmse_meV_per_A'))} | "
            f"{fmt(h.get('test_force_rmse_meV_per_A'))} | "
            f"{fmt(h.get('val_force_rmse_meV_per_A'))} | {fmt(h.get('calibration_spearman'), '.2f')} |"
        )
    lines += [
        "",
        "Explorer test: the ensemble that explored, on that iteration's held-out frames; new "
        "test: the ensemble trained in it, on all held-out frames so far (the run's learning "
        "curve: true error against labels).",
    ]
    return "\n".join(lines)


@flow(name="eelt", persist_result=False)
def eelt_run(config_path: str, run_dir: str | None = None) -> dict[str, Any]:
    """Run or resume the EELT loop of ``config_path`` in ``run_dir`` (default runs/NAME)."""
    config, base_dir = load_config(config_path)
    root = Path(run_dir) if run_dir else Path("runs") / config.name
    run = prepare_run(config, base_dir, root)
    with open_executor(config.execution, root / "logs") as executor:
        state = run_loop(Loop(run, executor), PrefectRunner(config.name))
    create_markdown_artifact(
        _history_markdown(state),
        key=_artifact_key(config.name, "history"),
        description=f"eelt run {config.name}: accuracy by iteration",
    )
    return state


if __name__ == "__main__":
    import sys

    eelt_run(sys.argv[1])
