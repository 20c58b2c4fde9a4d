"""The Prefect flow runs the loop once: iterations as subflows, artifacts for the UI."""

import asyncio

import yaml

from tests.loop_config import cu_start, tiny_config


def test_flow_runs_the_loop_and_publishes_artifacts(tmp_path, prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort

    from flows import eelt_run

    cfg = tiny_config(cu_start(tmp_path), loop={"max_iterations": 1})
    data = cfg.model_dump(mode="json")
    data["system"]["structures"] = ["cu4.extxyz"]
    config = tmp_path / "eelt.yaml"
    config.write_text(yaml.safe_dump(data))

    state = eelt_run.with_options(flow_run_name="cu-test")(str(config), str(tmp_path / "run"))
    assert state["status"] == "max_iterations"
    assert (tmp_path / "run" / "iter-000" / "train" / "report.json").is_file()

    async def query():
        async with get_client() as client:
            runs = await client.read_flow_runs(limit=50, sort=FlowRunSort.START_TIME_ASC)
            artifacts = await client.read_artifacts(limit=50, sort=ArtifactSort.CREATED_DESC)
            return runs, artifacts

    runs, artifacts = asyncio.run(query())
    by_name = {r.name: r for r in runs}
    assert by_name["cu-test"].state.is_completed()
    assert by_name["cu-test-iteration-000"].state.is_completed()
    keys = {a.key for a in artifacts}
    assert {"cu-test-iteration-000", "cu-test-iteration-000-plots", "cu-test-history"} <= keys
    # progress of the walkers, the labels and the training, each at 100% at the end
    for stage in ("init-label", "init-train", "iter-000-explore", "iter-000-label"):
        assert f"cu-test-{stage}" in keys, keys
    progress = [a for a in artifacts if a.type == "progress"]
    assert progress and all(float(a.data) == 100.0 for a in progress), [a.data for a in progress]
    by_key = {a.key: a for a in artifacts}
    table = str(by_key["cu-test-iteration-000"].data)
    assert "explorer test force RMSE" in table and "new ensemble test force RMSE" in table
    history = str(by_key["cu-test-history"].data)
    assert "new test F RMSE" in history and "held-out test frames" in history
    assert "](data:image/png;base64," in history  # the learning curve, embedded
    plots = str(by_key["cu-test-iteration-000-plots"].data)
    assert plots.count("](data:image/png;base64,") == 3, plots[
        :500
    ]  # deviation, calibration, curves


def test_flow_runs_a_streaming_run_and_publishes_each_generation(tmp_path, prefect_harness):
    from prefect.client.orchestration import get_client

    from flows import eelt_run
    from tests.orchestration.streaming.stream_config import streaming_config

    data = streaming_config(tmp_path).model_dump(mode="json")
    data["name"] = "cu-stream"
    data["system"]["structures"] = ["cu4.extxyz"]
    config = tmp_path / "eelt.yaml"
    config.write_text(yaml.safe_dump(data))

    state = eelt_run.with_options(flow_run_name="cu-stream")(str(config), str(tmp_path / "run"))
    assert state["mode"] == "streaming" and state["status"] == "budget_exhausted"

    async def query():
        async with get_client() as client:
            return await client.read_artifacts(limit=100)

    by_key = {a.key: a for a in asyncio.run(query()) if a.key and a.key.startswith("cu-stream")}
    for row in state["iterations"]:
        key = f"cu-stream-generation-{row['generation']:03d}-plots"
        assert key in by_key, sorted(by_key)
        assert "](data:image/png;base64," in str(by_key[key].data)
    history = str(by_key["cu-stream-history"].data)
    assert "loop wall / DFT wall" in history
