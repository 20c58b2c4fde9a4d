"""eelt report: one self-contained HTML file from a real (tiny) run directory."""

import base64
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from typer.testing import CliRunner

from eelt.cli import app
from eelt.orchestration.context import RunContext
from eelt.orchestration.runs import prepare_run, run_loop
from eelt.tools.report import PNG_SIGNATURE, learning_curve_png, learning_curve_points, write_report
from tests.loop_config import cu_start, tiny_config

runner = CliRunner()
DATA_URI = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One iteration of the tiny EMT loop: every plot a run writes, two walkers."""
    tmp = tmp_path_factory.mktemp("report")
    cfg = tiny_config(cu_start(tmp), loop={"max_iterations": 1})
    run = prepare_run(cfg, tmp, tmp / "run")
    with ThreadPoolExecutor(2) as pool:
        state = run_loop(RunContext(run, pool))
    return run, state


def test_report_embeds_every_plot(finished_run):
    run, state = finished_run
    result = runner.invoke(app, ["report", str(run.root)])
    assert result.exit_code == 0, result.output
    path = run.root / "report.html"
    assert path.is_file() and str(path) in result.output
    text = path.read_text()
    pngs = DATA_URI.findall(text)
    expected = [
        "learning curve",
        "init/train/learning_curves.png",
        "iter-000/examine/deviation.png",
        "iter-000/examine/calibration.png",
        "iter-000/train/learning_curves.png",
        *sorted(str(p.relative_to(run.root)) for p in run.root.glob("iter-000/explore/*.png")),
    ]
    assert len(expected) == 7  # two walkers
    assert re.findall(r'alt="([^"]+)"', text) == expected
    assert len(pngs) == len(expected) and f"{len(expected)} plots embedded" in text
    assert f"({len(expected)} plots," in result.output
    for data in pngs:
        assert base64.b64decode(data, validate=True).startswith(PNG_SIGNATURE)
    # self-contained: no external resource, no script
    rest = DATA_URI.sub("<img", text)
    assert "http" not in rest and "<script" not in rest and "href" not in rest
    assert len(re.findall(r"src=", rest)) == 0
    # the tables of `eelt status`: one row per iteration, its numbers as status prints them
    tables = re.findall(r"<tbody>(.*?)</tbody>", text)
    assert tables[0].count("<tr>") == len(state["iterations"]) == 1
    row = state["iterations"][0]
    assert f"<td>{row['labels_total']}</td>" in tables[0]
    assert f"<td>{row['test_force_rmse_meV_per_A']:.1f}</td>" in tables[1]
    assert "labels: " in text and "core-hours" in text and "max_iterations" in text


def test_report_limits_walkers_and_escapes_text(finished_run, tmp_path):
    run, _ = finished_run
    root = tmp_path / "run"
    shutil.copytree(run.root, root)
    (root / "report.html").unlink(missing_ok=True)  # the other test's
    label = root / "iter-000" / "label" / "report.json"
    report = json.loads(label.read_text())
    report["failed"] = [
        {"index": 2, "kind": "scf_not_converged", "reason": "<script>x</script> & co",
         "test_frame": True},
    ]  # fmt: skip
    report["failed_by_kind"] = {"scf_not_converged": 1}
    report["n_test_failed"] = 1
    label.write_text(json.dumps(report))
    out = tmp_path / "elsewhere" / "r.html"
    written = write_report(root, out, max_walker_plots=1)
    text = out.read_text()
    assert written.path == out and not (root / "report.html").exists()
    assert "walker plots: 1 of 2 walkers shown" in text
    assert len(DATA_URI.findall(text)) == len(written.images) == 6
    assert "&lt;script&gt;x&lt;/script&gt; &amp; co" in text and "<script>" not in text
    assert "scf_not_converged 1" in text


def test_learning_curve_points_and_png(finished_run, tmp_path):
    _, state = finished_run
    row = state["iterations"][0]
    points = learning_curve_points(state)
    assert points["new"] == [(row["labels_total"], row["test_force_rmse_meV_per_A"], 0)]
    assert points["explorer"] == [
        (state["n_init_labels"], row["explorer_test_force_rmse_meV_per_A"], 0)
    ]
    assert points["yardstick"] == []  # this run has no yardstick
    with_yardstick = {
        **state,
        "init_yardstick_force_rmse_meV_per_A": 90.0,
        "iterations": [{**row, "yardstick_force_rmse_meV_per_A": 70.0}],
    }
    assert learning_curve_points(with_yardstick)["yardstick"] == [
        (state["n_init_labels"], 90.0, -1),
        (row["labels_total"], 70.0, 0),
    ]
    path = learning_curve_png(state, tmp_path / "curve.png")
    assert path == tmp_path / "curve.png" and path.read_bytes().startswith(PNG_SIGNATURE)
    empty = learning_curve_png({"name": "x", "iterations": []}, tmp_path / "empty.png")
    assert empty.read_bytes().startswith(PNG_SIGNATURE)


def test_report_of_a_non_run_exits_2(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not an eelt run directory" in result.output
