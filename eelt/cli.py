"""The ``eelt`` command line: validate a config, run or resume a run, show its status,
train or evaluate an ensemble. Exit codes: 0 success, 1 unexpected failure, 2 user error.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich import box
from rich.console import Console
from rich.table import Table

from eelt.errors import EeltError
from eelt.orchestration.status_columns import (
    ACCURACY_CAPTION,
    ACCURACY_COLUMNS,
    ACCURACY_TITLE,
    EXPLORE_CAPTION,
    EXPLORE_COLUMNS,
    TIME_CAPTION,
    TIME_COLUMNS,
    TIME_TITLE,
    labels_line,
    run_title,
    stream_line,
    time_line,
)
from eelt.orchestration.status_columns import fmt as _fmt

app = typer.Typer(
    help="eelt: concurrent learning of interatomic potentials (explore, examine, label, train).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _wide(console: Console) -> Console:
    """Tables in full when output is not a terminal (rich would cut them at 80 columns)."""
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 240
    return console


out = _wide(Console())
err = _wide(Console(stderr=True))


def _setup_logging(quiet: bool, verbose: bool = False) -> None:
    from eelt.terminal import setup_logging

    setup_logging(err, quiet=quiet, verbose=verbose)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _guard(fn, *args, **kwargs):
    """Run ``fn``; user errors become one line on stderr and exit code 2."""
    try:
        return fn(*args, **kwargs)
    except EeltError as e:  # one line per problem
        lines = str(e).splitlines() or [str(e)]
        for line in lines[:-1]:
            err.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
        _fail(lines[-1])
    except KeyboardInterrupt as e:
        from eelt.orchestration.interrupt import Stopped

        if isinstance(e, Stopped):  # a run's own stop: _owning ends it
            raise
        _fail("interrupted; run the same command again to resume", code=130)


def _stop_now(signum: int) -> None:
    """End a run stopped by ``signum``: every process it started, its lock, one line, exit
    128 + signum (without waiting for threads or jobs in flight: their work is lost, finished
    work is on disk)."""
    from eelt.orchestration import lock, timing
    from eelt.orchestration.interrupt import end_descendants, exit_status

    where = timing.interrupted_at() or timing.where()
    timing.close_open_sessions(signum)  # ended at once, without unwinding: not recorded yet
    end_descendants()
    lock.release_all()
    err.print(
        f"interrupted{f' at {where}' if where else ''}; run the same command to resume",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_status(signum))


def _owning(root: Path, command: str, body):
    """Run ``body()`` holding the lock of run directory ``root`` (refused: one line, exit 2,
    nothing written), stopping on SIGTERM or SIGINT with one line and exit 143 or 130."""
    from eelt.orchestration.interrupt import StopOnSignals, signal_of
    from eelt.orchestration.lock import acquire

    stop = StopOnSignals(_stop_now)
    try:
        with stop:
            with _guard(acquire, root, command):
                return body()
    except BaseException as e:
        signum = signal_of(e)
        if signum is None:
            raise
        _stop_now(stop.signum or signum)


@app.command()
def server(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0: a free one)")] = 4200,
) -> None:
    """Start a local Prefect server (UI and API on 127.0.0.1, SQLite under the user's data
    directory, analytics off); `eelt run` finds it by itself. Ctrl-C stops it."""
    import subprocess
    import sys

    from eelt.server import free_port, record_server, server_environment

    port = port or free_port()
    env = {**os.environ, **server_environment(port)}
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
           "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env)
    record_server(port, proc.pid)
    out.print(f"eelt server: UI http://127.0.0.1:{port}, API http://127.0.0.1:{port}/api")
    try:
        raise typer.Exit(proc.wait())
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()


@app.command()
def serve(
    config: Annotated[Path, typer.Argument(help="run config (YAML)")],
    run_dir: Annotated[Path | None, typer.Option(help="run directory (default: runs/NAME)")] = None,
    cron: Annotated[str | None, typer.Option(help="a schedule, e.g. '0 2 * * *'")] = None,
    interval_s: Annotated[float | None, typer.Option(help="a schedule: every N seconds")] = None,
) -> None:
    """Register the run as a Prefect deployment (eelt/NAME) and execute the runs started from
    the UI (or on a schedule) until Ctrl-C; each start runs or resumes the run directory."""
    from eelt.config import load_config
    from eelt.orchestration.preflight import preflight
    from eelt.server import healthy, running_server

    _setup_logging(False)
    cfg, base_dir = _guard(load_config, config)
    root = run_dir or Path("runs") / cfg.name
    _guard(preflight, cfg, base_dir, root)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not os.environ.get("PREFECT_API_URL"):
        if (api_url := running_server()) is None:
            _fail(
                "eelt serve needs a Prefect server: start `eelt server` first (or set PREFECT_API_URL)"
            )
        os.environ["PREFECT_API_URL"] = api_url
    elif not healthy(os.environ["PREFECT_API_URL"].rstrip("/")):
        _fail(
            f"the Prefect API at {os.environ['PREFECT_API_URL']} (PREFECT_API_URL) does not "
            "answer: start it (`eelt server`), or unset PREFECT_API_URL to use a running `eelt server`"
        )
    from flows.serve import serve as serve_deployment

    out.print(
        f"deployment eelt/{cfg.name} on {os.environ['PREFECT_API_URL']}: start it from the UI; Ctrl-C stops"
    )
    try:
        serve_deployment(config, root, cfg.name, cron=cron, interval_s=interval_s)
    except KeyboardInterrupt:
        pass


cluster_app = typer.Typer(help="batch-scheduler clusters (execution.kind slurm|pbs|sge|lsf)")
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("script")
def cluster_script(config: Annotated[Path, typer.Argument(help="run config (YAML)")]) -> None:
    """Print the batch script one Dask worker job of this config would be submitted with."""
    from eelt.config import load_config

    cfg, _ = _guard(load_config, config)
    if cfg.execution.kind in ("local", "threads"):
        _fail(
            f"{config}: execution.kind is {cfg.execution.kind!r}; no batch script (use slurm, pbs, sge or lsf)"
        )
    from eelt.orchestration.execution import jobqueue_cluster

    cluster = jobqueue_cluster(cfg.execution)
    try:
        out.print(cluster.job_script(), highlight=False, markup=False, soft_wrap=True)
    finally:
        cluster.close()


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(help="run config (YAML)")],
    run_dir: Annotated[Path | None, typer.Option(help="run directory (default: runs/NAME)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the resolved config as JSON")] = False,
) -> None:
    """Check a config as `eelt run` would before starting anything (structures, elements,
    functional and basis, biases, initial data, whether the run directory may be resumed),
    and print it with every default filled in; one line per problem (exit 2)."""
    from eelt.config import ConfigError, load_config
    from eelt.orchestration.preflight import preflight

    try:
        cfg, base_dir = load_config(config)
        inputs = preflight(cfg, base_dir, run_dir or Path("runs") / cfg.name)
    except (ConfigError, EeltError) as e:
        for line in str(e).splitlines():
            err.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    resolved = inputs.config.model_dump(mode="json")
    if as_json:
        print(json.dumps(resolved, indent=2))
    else:
        out.print(yaml.safe_dump(resolved, sort_keys=False), highlight=False)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="run config (YAML)")],
    run_dir: Annotated[Path | None, typer.Option(help="run directory (default: runs/NAME)")] = None,
    fresh: Annotated[bool, typer.Option(help="refuse to resume an existing run directory")] = False,
    plain: Annotated[bool, typer.Option(help="run without Prefect (no flow runs, no UI)")] = False,
    quiet: Annotated[bool, typer.Option(help="only warnings and errors; no progress")] = False,
    verbose: Annotated[
        bool, typer.Option(help="Prefect's and Dask's own log lines on the console too")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="the final state as JSON on stdout")
    ] = False,
) -> None:
    """Run the EELT loop, or resume it where it stopped (exit 0 finished, 2 user error)."""
    from eelt.config import load_config

    _setup_logging(quiet, verbose)
    cfg, base_dir = _guard(load_config, config)
    root = run_dir or Path("runs") / cfg.name
    if fresh and (root / "eelt.yaml").exists():
        _fail(f"{root} already holds a run; drop --fresh to resume it or choose another --run-dir")
    from eelt.orchestration.preflight import preflight
    from eelt.terminal import console_tracker

    _guard(preflight, cfg, base_dir, root)  # before any server or cluster starts
    trackers = () if quiet else (console_tracker(err),)
    state = _owning(root, "eelt run", lambda: _run(cfg, config, base_dir, root, plain, verbose,
                                                   trackers))  # fmt: skip
    if as_json:
        print(json.dumps(state, indent=2))
    elif quiet:
        detail = state.get("status_detail")
        out.print(
            f"eelt run {state['name']}: {state['status']}" + (f" ({detail})" if detail else "")
        )
    else:
        _print_status(state)


def _run(cfg, config: Path, base_dir: Path, root: Path, plain: bool, verbose: bool, trackers):
    """The run, once its directory is held: through Prefect, unless ``plain`` or Prefect's API
    does not answer (then plain, after one warning line)."""
    from eelt.orchestration.tracking import tracking

    if not plain:
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "eelt")
        if not os.environ.get("PREFECT_API_URL"):
            from eelt.server import running_server

            if (api_url := running_server()) is not None:  # an `eelt server`: runs go there
                os.environ["PREFECT_API_URL"] = api_url
                logging.getLogger("eelt").info("flow runs go to the eelt server at %s", api_url)
        # the ephemeral server needs longer than Prefect's default on a busy 2-core machine
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        from flows import eelt_run
        from flows.connect import PrefectUnavailable, connect

        if not verbose:
            from flows.console import quiet_prefect_console

            quiet_prefect_console()
        try:
            connect()
        except PrefectUnavailable as e:
            err.print(
                f"[bold yellow]warning:[/] {e}; running without Prefect (as --plain: no flow "
                "run in the UI). Start `eelt server` once (runs then use it), raise "
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or pass --plain",
                highlight=False,
                soft_wrap=True,
            )
            plain = True
    if plain:
        with tracking(*trackers):
            return _guard(_run_plain, cfg, base_dir, root)
    flow = eelt_run.with_options(flow_run_name=cfg.name)
    with tracking(*trackers):
        return _guard(flow, str(config), str(root))


def _run_plain(cfg, base_dir: Path, root: Path) -> dict:
    from eelt.orchestration.context import RunContext
    from eelt.orchestration.execution import open_executor
    from eelt.orchestration.runs import prepare_run, run_loop

    run = prepare_run(cfg, base_dir, root)
    with open_executor(cfg.execution, root / "logs") as executor:
        return run_loop(RunContext(run, executor))


def _table(title: str, columns, rows: list[dict], caption: str) -> Table:
    table = Table(
        title=title,
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        show_edge=False,
    )
    for col, _, _ in columns:
        table.add_column(col, justify="right")
    for h in rows:
        table.add_row(*(_fmt(h.get(key), spec) for _, key, spec in columns))
    return table


def _print_status(state: dict) -> None:
    rows = state["iterations"]
    out.print(_table(run_title(state), EXPLORE_COLUMNS, rows, EXPLORE_CAPTION))
    out.print(_table(ACCURACY_TITLE, ACCURACY_COLUMNS, rows, ACCURACY_CAPTION))
    out.print(_table(TIME_TITLE, TIME_COLUMNS, rows, TIME_CAPTION))
    out.print(labels_line(state))
    if line := stream_line(state):
        out.print(line)
    if line := time_line(state):
        out.print(line)


@app.command()
def status(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    as_json: Annotated[bool, typer.Option("--json", help="print the state as JSON")] = False,
) -> None:
    """Show a run's progress from its run directory alone (no server needed)."""
    from eelt.orchestration.rundir import RunDir

    run = RunDir(run_dir)
    if run.exists() and not run.state_path.is_file() and not as_json:
        from eelt.orchestration.progress import init_progress

        out.print(init_progress(run), highlight=False, markup=False)
        if holder := _with_holder(run_dir, {"time": None}).get("held_by"):
            from eelt.orchestration.lock import describe

            out.print(f"in use now by {describe(holder)}", highlight=False, markup=False)
        return
    state = _guard(run.read_state)
    state = _with_holder(run_dir, state)
    if as_json:
        print(json.dumps(state, indent=2))
        return
    _print_status(state)
    if holder := state.get("held_by"):
        from eelt.orchestration.lock import describe

        out.print(f"in use now by {describe(holder)}", highlight=False, markup=False)


def _with_holder(run_dir: Path, state: dict) -> dict:
    """``state`` with the live process that holds the run directory (``held_by``), and the
    session under way counted in its time (state.json's time is as of its last write)."""
    from eelt.orchestration import timing
    from eelt.orchestration.lock import gone_reason, read_holder

    holder = read_holder(run_dir)
    if holder is None or gone_reason(holder) is not None:
        return state
    state = {**state, "held_by": {k: v for k, v in holder.items() if k != "token"}}
    running = timing.running_session(run_dir)
    same = running and (running.get("host"), running.get("pid")) == (holder["host"], holder["pid"])
    if same and state.get("time"):
        state["time"] = timing.with_running_session(run_dir, state["time"], running["started"])
    return state


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="directory of model-*.pt (an ensemble)")],
    data: Annotated[Path, typer.Option(help="extxyz with reference energies and forces")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
) -> None:
    """Energy and force RMSE of an ensemble's mean prediction on a labeled dataset."""
    metrics = _guard(_evaluate, model, data)
    if as_json:
        print(json.dumps(metrics))
    else:
        out.print(
            f"{metrics['n_frames']} frames: energy RMSE {metrics['energy_rmse_meV_per_atom']:.3f} meV/atom, "
            f"force RMSE {metrics['force_rmse_meV_per_A']:.2f} meV/A"
        )


def _evaluate(model: Path, data: Path) -> dict:
    import ase.io

    from eelt.model.families import load_ensemble
    from eelt.train import evaluate_rmse

    if not sorted(model.glob("model-*.pt")):
        raise EeltError(f"--model {model}: no model-*.pt files there")
    if not data.is_file():
        raise EeltError(f"--data {data}: no such file")
    frames = ase.io.read(data, ":")
    for i, atoms in enumerate(frames):
        if atoms.calc is None or "forces" not in atoms.calc.results:
            raise EeltError(f"--data {data}: frame {i} has no reference energy and forces")
    return evaluate_rmse(load_ensemble(model), frames)


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="extxyz with energies and forces")],
    out_dir: Annotated[Path, typer.Option("--out", help="directory for model-*.pt")],
    config: Annotated[
        Path | None, typer.Option(help="YAML with a 'train' section (and 'execution')")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="model family: deeppot or mace (its defaults where the config has no "
            "train.model section)"
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="only warnings and errors")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the members' results as JSON")] = False,
) -> None:
    """Train an ensemble on a labeled dataset, outside the loop."""
    _setup_logging(quiet)
    results = _guard(_train, data, out_dir, config, model)
    if as_json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
        return
    for r in results:
        out.print(
            f"member {r.member}: validation energy RMSE {r.val_energy_rmse_meV_per_atom:.3f} meV/atom, "
            f"force RMSE {r.val_force_rmse_meV_per_A:.2f} meV/A ({r.steps} steps, {r.wall_s:.0f} s)"
        )


MODEL_FAMILIES = ("deeppot", "mace")


def _train(data: Path, out_dir: Path, config: Path | None, model: str | None = None):
    import ase.io
    from ase.data import atomic_numbers

    from eelt.config import ExecutionConfig, TrainConfig, parse_section
    from eelt.orchestration.execution import open_executor
    from eelt.train import train_ensemble

    if model is not None and model not in MODEL_FAMILIES:
        raise EeltError(f"--model {model}: not one of {', '.join(MODEL_FAMILIES)}")
    if not data.is_file():
        raise EeltError(f"--data {data}: no such file")
    sections = {}
    if config is not None:
        if not config.is_file():
            raise EeltError(f"--config {config}: no such file")
        sections = yaml.safe_load(config.read_text()) or {}
    train_section = dict(sections.get("train") or {})
    if model is not None:
        model_section = dict(train_section.get("model") or {})
        said = model_section.setdefault("kind", model)
        if said != model:
            raise EeltError(f"--model {model}: the config's train.model.kind is {said}")
        train_section["model"] = model_section
    train_cfg = parse_section(TrainConfig, train_section, "train")
    base_model = getattr(train_cfg.model, "base_model", None)
    if base_model is not None and config is not None:  # relative to the config file
        where = str(config.parent.resolve() / Path(base_model).expanduser())
        train_cfg = train_cfg.model_copy(
            update={"model": train_cfg.model.model_copy(update={"base_model": where})}
        )
    exec_cfg = parse_section(ExecutionConfig, sections.get("execution", {}), "execution")
    frames = ase.io.read(data, ":")
    type_map = sorted({s for a in frames for s in a.get_chemical_symbols()}, key=atomic_numbers.get)
    with open_executor(exec_cfg) as executor:
        return train_ensemble([str(data)], out_dir, train_cfg, type_map, executor)


@app.command()
def baseline(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    labels: Annotated[
        list[int] | None,
        typer.Option("--labels", help="training labels N (repeatable; default: the run's)"),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="extxyz with energies and forces to evaluate on too")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="seed of the random draw (default: examine.seed)")
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="which ensembles to train: selected, random, thermal (repeatable; default: "
            "all, thermal when the run has a thermal sampler)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    quiet: Annotated[bool, typer.Option(help="only warnings and errors")] = False,
) -> None:
    """Active learning against random selection: ensembles trained on N labels each, chosen
    by the run, at random from its explored frames, at random from its thermal sampler's MD."""
    from eelt.tools.baseline import TABLE_HEADER, run_baseline, table_rows

    _setup_logging(quiet)
    report = _owning(
        run_dir,
        "eelt baseline",
        lambda: _guard(run_baseline, run_dir, labels, data, seed, None, sets),
    )
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"selected against random: {run_dir}")
    columns = (0, 1, 3, 4, 5, 7)  # N, set, test F and E, yardstick F, --data F
    for col in columns:
        table.add_column(TABLE_HEADER[col], justify="right")
    for row in table_rows(report):
        table.add_row(*(row[col] for col in columns))
    out.print(table)
    for entry in report["results"]:
        if entry["selected_missing"]:
            out.print(f"N={entry['n_labels']}: no selected set: {entry['selected_missing']}")
    for note in report["notes"]:
        out.print(f"note: {note}")
    out.print(f"report: {run_dir / 'baseline' / 'report.md'}; plot: force_rmse.png beside it")


@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    fmt: Annotated[
        str, typer.Option("--format", help="extxyz | deepmd (DeePMD's npy, one system per formula)")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="directory to write the sets into")],
    test: Annotated[
        bool, typer.Option("--test/--no-test", help="the held-out test frames too")
    ] = True,
) -> None:
    """Export a run's labeled frames (training set, held-out test set) as extxyz or DeePMD npy."""
    from eelt.tools.export import export_run

    for written in _guard(export_run, run_dir, fmt, out_dir, test):
        if written.n_frames:
            out.print(
                f"{written.name}: {written.n_frames} frames, {written.n_systems} "
                f"system{'s' if written.n_systems != 1 else ''} -> {written.path}",
                highlight=False,
                markup=False,
            )
        for note in written.notes:
            out.print(f"{written.name}: {note}", highlight=False, markup=False)


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="HTML file (default: RUN_DIR/report.html)")
    ] = None,
) -> None:
    """One self-contained HTML file of a run: its tables, learning curve and plots, embedded."""
    from eelt.tools.report import write_report

    written = _guard(write_report, run_dir, out_file)
    out.print(
        f"report: {written.path} ({len(written.images)} plots, {written.n_bytes / 1e6:.1f} MB)",
        highlight=False,
        markup=False,
    )


@app.command("init")
def init_command(
    structure: Annotated[Path, typer.Argument(help="structure file (any ase.io format)")],
    out_file: Annotated[
        Path, typer.Option("--out", help="config file to write (never overwritten)")
    ] = Path("eelt.yaml"),
    name: Annotated[
        str | None, typer.Option(help="run name (default: the structure file's name)")
    ] = None,
    labeler: Annotated[
        str | None,
        typer.Option(help="pyscf (default for molecules) | xtb (default for cells) | emt"),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="model family: mace | deeppot (default: mace for a molecule, deeppot for a cell)"
        ),
    ] = None,
) -> None:
    """Write a commented first config for a structure, sized for a laptop."""
    from eelt.tools.init_config import write_init_config

    path, chosen, family = _guard(write_init_config, structure, out_file, name, labeler, model)
    out.print(
        f"wrote {path} (labeler {chosen}, model {family}); check it with `eelt validate {path}`",
        highlight=False,
        markup=False,
    )


@app.command("export-model")
def export_model(
    models_dir: Annotated[Path, typer.Argument(help="directory of model-*.pt (an ensemble)")],
    out_dir: Annotated[Path, typer.Option("--out", help="directory for the exported files")],
) -> None:
    """Export each member in its family's own format: DeepPot-SE as TorchScript files that run
    with torch alone (Python or C++), with ensemble.json (type map, cutoff) beside them; MACE as
    mace-torch model files (mace's calculator and LAMMPS path load them)."""
    paths = _guard(_export_model, models_dir, out_dir)
    for path in paths:
        out.print(str(path), highlight=False)


def _export_model(models_dir: Path, out_dir: Path) -> list[Path]:
    from eelt.model.families import load_ensemble

    if not models_dir.is_dir():
        raise EeltError(f"{models_dir}: no such directory")
    try:
        return load_ensemble(models_dir).export(out_dir)
    except (FileNotFoundError, ValueError) as err:
        raise EeltError(f"{models_dir}: {err}") from None


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
