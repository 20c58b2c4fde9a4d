"""Train an ensemble: its members in stacks (eelt.train.stacked), one job per stack through an
Executor (a Dask client's executor or a thread pool), resumable, with warm starts from the
previous ensemble, metrics.json and learning curves."""

from __future__ import annotations

import logging
import os
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

from eelt.config import TrainConfig
from eelt.errors import EeltError
from eelt.train.curves import plot_curves, read_curve
from eelt.train.members import member_seed
from eelt.train.records import known_results, previous_result, write_metrics
from eelt.train.result import MemberResult, TrainingDiverged
from eelt.train.stacked import train_stacked

log = logging.getLogger(__name__)


def stack_groups(members: list[int], stacks: int | str, executor: Executor) -> list[list[int]]:
    """The members in consecutive groups, one stacked job each: ``stacks`` of them, or for
    "auto" one per worker thread of a Dask cluster (one where the jobs ask for a GPU: all
    members on one device; one on a thread pool, whose threads would contend for the
    interpreter), never more than the members."""
    if not members:
        return []
    if stacks == "auto":
        client = getattr(executor, "_client", None)  # a Dask client's executor
        resources = getattr(executor, "_kwargs", {}).get("resources") or {}
        if client is not None and "GPU" in resources:
            stacks = 1
        elif client is not None:
            stacks = sum(client.nthreads().values())
        elif isinstance(executor, ThreadPoolExecutor):
            stacks = 1
        else:  # e.g. a process pool
            stacks = getattr(executor, "_max_workers", 1)
    n = max(1, min(int(stacks), len(members)))
    return [[int(m) for m in part] for part in np.array_split(members, n)]


def train_ensemble(
    data_files: list[str],
    out_dir: Path,
    train: TrainConfig,
    type_map: list[str],
    executor: Executor,
    init_dir: Path | None = None,
    warm: bool = False,
    torch_threads: int | None = None,
) -> list[MemberResult]:
    """Train train.ensemble_size members on the executor into out_dir/model-<m>.pt.

    The members train together as stacks (eelt.train.stacked), one job per stack (see
    stack_groups; on a GPU worker a stack trains on its device).
    warm (with init_dir): member m starts from init_dir/model-<m>.pt for train.warm_steps at
    train.warm_start_lr. Members whose checkpoint exists are skipped (resume: the missing
    members train as a smaller stack, each as it would have in the full one). Writes
    out_dir/metrics.json and out_dir/learning_curves.png; raises TrainingDiverged naming the
    members that diverged after the others finished. ``torch_threads`` per job; None: on a
    thread pool, its cores shared among the concurrent jobs (else the worker's setting).
    A MACE ensemble (train.model.kind mace) trains one job per member instead
    (eelt.train.mace.train_mace_ensemble).
    """
    if train.model.kind == "mace":  # imported here: mace-torch takes seconds to import
        from eelt.train.mace import train_mace_ensemble

        return train_mace_ensemble(
            data_files, out_dir, train, type_map, executor, init_dir, warm, torch_threads
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_files = [str(f) for f in data_files]
    if warm and init_dir is None:
        raise ValueError("train_ensemble: warm=True needs init_dir (the previous ensemble)")
    metrics_path = out_dir / "metrics.json"
    known = known_results(metrics_path)

    results: dict[int, MemberResult] = {}
    to_train = []
    for m in range(train.ensemble_size):
        if (out_dir / f"model-{m}.pt").is_file():
            results[m] = previous_result(out_dir, m, member_seed(train.seed, m), known)
        else:
            to_train.append(m)
    stacks = stack_groups(to_train, train.stacks, executor)
    if torch_threads is None and isinstance(executor, ThreadPoolExecutor) and to_train:
        # jobs in threads of one process: OpenMP teams per thread oversubscribe the cores
        concurrent = min(len(stacks), getattr(executor, "_max_workers", len(stacks)))
        torch_threads = max(1, (os.cpu_count() or 1) // concurrent)

    if warm:
        missing = [str(Path(init_dir) / f"model-{m}.pt") for m in to_train]
        missing = [p for p in missing if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"warm start checkpoints do not exist: {', '.join(missing)}")

    futures: dict[Future, list[int]] = {}
    warm_kwargs = {"steps": train.warm_steps, "start_lr": train.warm_start_lr} if warm else {}
    for group in stacks:
        kwargs: dict = {"members": group, "torch_threads": torch_threads, **warm_kwargs}
        if warm:
            kwargs["init_from"] = [str(Path(init_dir) / f"model-{m}.pt") for m in group]
        future = executor.submit(
            train_stacked,
            data_files,
            [str(out_dir / f"model-{m}.pt") for m in group],
            train,
            list(type_map),
            [member_seed(train.seed, m) for m in group],
            **kwargs,
        )
        futures[future] = group

    failed: dict[int, str] = {}
    other_error: BaseException | None = None
    pending = set(futures)
    while pending:
        done, pending = wait(pending, return_when="FIRST_COMPLETED")
        for future in done:
            ms = futures[future]
            try:
                outcome = future.result()
            except TrainingDiverged as err:
                failed.update((m, str(err)) for m in ms)
                continue
            except Exception as err:  # finish the other members, then re-raise
                other_error = other_error or err
                for m in ms:
                    failed[m] = f"member {m}: {type(err).__name__}: {err}"
                continue
            for m, r in zip(ms, outcome, strict=True):
                if isinstance(r, TrainingDiverged):
                    failed[m] = str(r)
                else:
                    results[m] = r
            if results:
                write_metrics(metrics_path, results)

    if results:
        write_metrics(metrics_path, results)
        curves = {
            f"model-{m}": read_curve(out_dir / f"model-{m}.csv")
            for m in sorted(results)
            if (out_dir / f"model-{m}.csv").is_file()
        }
        if curves:
            plot_curves(curves, out_dir / "learning_curves.png")
    if other_error is not None:
        raise other_error
    if failed:
        detail = "; ".join(failed[m] for m in sorted(failed))
        raise TrainingDiverged(
            f"{len(failed)} of {train.ensemble_size} members diverged "
            f"(members {sorted(failed)}): {detail}"
        )
    return [results[m] for m in sorted(results)]


def train_warm_or_fresh(
    data_files: list[str],
    out_dir: Path,
    train: TrainConfig,
    type_map: list[str],
    executor: Executor,
    init_dir: Path | None,
    warm: bool,
    what: str,
) -> list[MemberResult]:
    """:func:`train_ensemble`, warm from ``init_dir`` when ``warm``; members whose warm start
    diverged train again from scratch (finished members are kept). A cold training that
    diverges is a user error naming ``what`` (one line)."""
    try:
        return train_ensemble(
            data_files, out_dir, train, type_map, executor, init_dir=init_dir, warm=warm
        )
    except TrainingDiverged as err:
        if not warm:
            rate = "train.model.lr" if train.model.kind == "mace" else "train.start_lr"
            raise EeltError(
                f"{what}: training diverged: {err}; lower {rate} or check the data"
            ) from None
        log.warning("%s: warm start diverged (%s); training those members from scratch", what, err)
        return train_ensemble(data_files, out_dir, train, type_map, executor)


def training_busy_s(members: list[dict], cfg: TrainConfig, executor: Executor) -> float:
    """Worker seconds a training took: one job per stack, whose members each report the
    stack's wall time (counted once); one job per member for MACE."""
    walls = {m["member"]: m.get("wall_s") or 0.0 for m in members}
    walls = {k: (0.0 if v != v else v) for k, v in walls.items()}  # NaN: trained earlier
    if cfg.model.kind == "mace":
        return float(sum(walls.values()))
    groups = stack_groups(sorted(walls), cfg.stacks, executor)
    return float(sum(max(walls[m] for m in group) for group in groups))
